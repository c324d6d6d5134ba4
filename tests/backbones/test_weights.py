"""Weight loading: official release layouts round-trip through timm's key filters, strictly and safely."""

import re

import pytest
import torch
from safetensors.torch import save_file

from mgfusion.backbones import CheckpointMismatchError, CheckpointReadError, build_encoder


# ---- exporters: timm layout -> each project's official release layout (inverse of timm's filters) --------------
def to_official_dinov3(sd):
    out = {"mask_token": torch.zeros(1, sd["cls_token"].shape[-1]), "rope_embed.periods": torch.ones(8)}
    for k, v in sd.items():
        if k.endswith("attn.q_bias"):
            base = k[: -len("q_bias")]
            out[base + "qkv.bias"] = torch.cat([v, torch.zeros_like(v), sd[base + "v_bias"]])
            continue
        if k.endswith("attn.v_bias"):
            continue
        k = k.replace("reg_token", "storage_tokens").replace("gamma_1", "ls1.gamma").replace("gamma_2", "ls2.gamma")
        out[k] = v
    return out


def to_official_dinov2(sd):
    out = {"mask_token": torch.zeros(1, sd["cls_token"].shape[-1])}
    if "reg_token" in sd:  # timm folds the cls pos-embed into cls_token for the register variants
        pos0 = torch.randn_like(sd["cls_token"])
        out["register_tokens"] = sd["reg_token"]
        out["cls_token"] = sd["cls_token"] - pos0
        out["pos_embed"] = torch.cat([pos0, sd["pos_embed"]], dim=1)
    out.update({k: v for k, v in sd.items() if k not in ("reg_token", "cls_token", "pos_embed") or k not in out
                and "reg_token" not in sd})
    return out


def to_official_sam(sd):
    out = {"image_encoder." + k.replace("mlp.fc", "mlp.lin"): v for k, v in sd.items()}
    out["image_encoder.neck.0.weight"] = torch.zeros(256, 768, 1, 1)  # SAM's conv neck: not used for features
    out["prompt_encoder.pe_layer.positional_encoding_gaussian_matrix"] = torch.zeros(2, 128)
    out["mask_decoder.iou_token.weight"] = torch.zeros(1, 256)
    return out


def to_official_sam2(sd):
    trunk = {"image_encoder.trunk." + k.replace("mlp.fc1", "mlp.layers.0").replace("mlp.fc2", "mlp.layers.1"): v
             for k, v in sd.items()}
    trunk["image_encoder.neck.convs.0.conv.weight"] = torch.zeros(256, 32, 1, 1)
    trunk["sam_mask_decoder.iou_token.weight"] = torch.zeros(1, 256)
    return {"model": trunk}


def to_official_swin(sd):
    out = {}
    for k, v in sd.items():  # original Swin downsamples at the END of a stage, timm at the start
        k = re.sub(r"layers\.(\d+)\.downsample", lambda m: f"layers.{int(m.group(1)) - 1}.downsample", k)
        out[k] = v
    out["norm.weight"], out["norm.bias"] = torch.ones(1024), torch.zeros(1024)
    out["head.weight"], out["head.bias"] = torch.zeros(21841, 1024), torch.zeros(21841)
    return {"model": out}


CASES = {
    # name: (build kwargs, exporter, file name in the official release style)
    "dinov3_vits16": (dict(neck="raw"), to_official_dinov3, "dinov3_vits16_pretrain_lvd1689m.pth"),
    "dinov2_vits14": (dict(neck="raw"), to_official_dinov2, "dinov2_vits14_pretrain.pth"),
    "dinov2_vits14_reg": (dict(neck="raw"), to_official_dinov2, "dinov2_vits14_reg4_pretrain.pth"),
    "samvit_b": (dict(neck="raw", timm_kwargs=dict(depth=2, global_attn_indexes=[1])), to_official_sam,
                 "sam_vit_b_01ec64.pth"),
    "sam2_hiera_micro": ({}, to_official_sam2, "sam2.1_hiera_micro.pt"),
    "swin_b": (dict(timm_kwargs=dict(depths=(2, 2, 2, 2))), to_official_swin, "swin_base_patch4_window12_384.pth"),
}


def _outputs(enc, x):
    with torch.no_grad():
        return enc.eval()(x)


@pytest.mark.parametrize("name", list(CASES))
def test_official_layout_round_trip(name, tmp_path):
    kwargs, exporter, fname = CASES[name]
    torch.manual_seed(0)
    src = build_encoder(name, **kwargs)
    path = tmp_path / fname
    torch.save(exporter(src.trunk.state_dict()), path)
    torch.manual_seed(1)
    dst = build_encoder(name, weights=str(path), **kwargs)
    x = torch.randn(1, 3, 64, 96)
    a, b = _outputs(src, x), _outputs(dst, x)
    for s in a:
        torch.testing.assert_close(a[s], b[s], rtol=1e-5, atol=1e-5)
    torch.manual_seed(1)
    fresh = build_encoder(name, **kwargs)
    assert not torch.allclose(_outputs(fresh, x)[16], a[16]), "weights must actually have been loaded"


def test_timm_safetensors_round_trip(tmp_path):
    torch.manual_seed(0)
    src = build_encoder("sam2_hiera_micro")
    path = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in src.trunk.state_dict().items()}, str(path))
    dst = build_encoder("sam2_hiera_micro", weights=path)
    x = torch.randn(1, 3, 64, 64)
    torch.testing.assert_close(_outputs(src, x)[32], _outputs(dst, x)[32])


def test_missing_key_fails_naming_the_key(tmp_path):
    sd = to_official_dinov3(build_encoder("dinov3_micro16").trunk.state_dict())
    del sd["blocks.1.attn.proj.weight"]
    sd["blocks.0.attn.extra_thing"] = torch.zeros(3)
    path = tmp_path / "broken.pth"
    torch.save(sd, path)
    with pytest.raises(CheckpointMismatchError) as exc:
        build_encoder("dinov3_micro16", weights=path)
    msg = str(exc.value)
    assert "missing keys (1): blocks.1.attn.proj.weight" in msg
    assert "unexpected keys (1): blocks.0.attn.extra_thing" in msg
    assert str(path) in msg
    enc = build_encoder("dinov3_micro16", weights=path, strict=False)  # explicit opt-out loads the rest
    torch.testing.assert_close(enc.trunk.blocks[0].attn.qkv.weight, sd["blocks.0.attn.qkv.weight"])


def test_shape_mismatch_is_reported(tmp_path):
    sd = build_encoder("sam2_hiera_micro").trunk.state_dict()
    sd["patch_embed.proj.weight"] = torch.zeros(8, 3, 7, 7)
    path = tmp_path / "wrong_shape.pt"
    torch.save({"model": {"image_encoder.trunk." + k: v for k, v in sd.items()}}, path)
    with pytest.raises(CheckpointMismatchError, match=r"patch_embed.proj.weight: checkpoint \(8, 3, 7, 7\)"):
        build_encoder("sam2_hiera_micro", weights=path)


def test_truncated_and_missing_files_give_clear_errors(tmp_path):
    good = tmp_path / "good.pth"
    torch.save(build_encoder("sam2_hiera_micro").trunk.state_dict(), good)
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(good.read_bytes()[:1000])
    with pytest.raises(CheckpointReadError, match="could not read weights file .*truncated.pth"):
        build_encoder("sam2_hiera_micro", weights=truncated)
    with pytest.raises(CheckpointReadError, match="weights file not found: .*nope.pth"):
        build_encoder("sam2_hiera_micro", weights=tmp_path / "nope.pth")


class _Evil:
    def __reduce__(self):
        return (print, ("pickled code ran",))


def test_pickled_code_is_never_executed(tmp_path, capsys):
    path = tmp_path / "evil.pth"
    torch.save({"model": _Evil()}, path)
    with pytest.raises(CheckpointReadError, match="never unpickles arbitrary code"):
        build_encoder("sam2_hiera_micro", weights=path)
    assert "pickled code ran" not in capsys.readouterr().out
