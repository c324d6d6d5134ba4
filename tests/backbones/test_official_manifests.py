"""Checkpoint converters against the key names and shapes of the official releases.

``tests/fixtures/checkpoint_manifests/`` holds, per released file, every key and shape it contains, taken from the
releasing project's own model definition (README there). Each test writes a zero-filled file with exactly those keys
in the release's wrapping and loads it through ``build_encoder(name, weights=file)``, which converts and loads
strictly: any missing or unexpected key that is not a documented ignored head key fails the load.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
import torch

from mgfusion.backbones import CheckpointMismatchError, build_encoder, list_encoders
from mgfusion.backbones.weights import load_weights_into

MANIFESTS = Path(__file__).resolve().parents[1] / "fixtures" / "checkpoint_manifests"

#: registry name -> official release files it must load. Building the encoders in SLOW (every size but the smallest,
#: and Swin-B, whose random init alone takes ~10 s) costs 5-30 s each on 2 CPU cores.
RELEASES = {
    "dinov3_vits16": ["dinov3_vits16_pretrain_lvd1689m-08c60483.pth"],
    "dinov3_vitb16": ["dinov3_vitb16_pretrain_lvd1689m-73cec8be.pth"],
    "dinov3_vitl16": ["dinov3_vitl16_pretrain_lvd1689m-8aa4cbdd.pth"],
    "dinov2_vits14": ["dinov2_vits14_pretrain.pth"],
    "dinov2_vitb14": ["dinov2_vitb14_pretrain.pth"],
    "dinov2_vitl14": ["dinov2_vitl14_pretrain.pth"],
    "dinov2_vits14_reg": ["dinov2_vits14_reg4_pretrain.pth"],
    "dinov2_vitb14_reg": ["dinov2_vitb14_reg4_pretrain.pth"],
    "dinov2_vitl14_reg": ["dinov2_vitl14_reg4_pretrain.pth"],
    "samvit_b": ["sam_vit_b_01ec64.pth"],
    "samvit_l": ["sam_vit_l_0b3195.pth"],
    "sam2_hiera_t": ["sam2_hiera_tiny.pt", "sam2.1_hiera_tiny.pt"],
    "sam2_hiera_s": ["sam2.1_hiera_small.pt"],
    "sam2_hiera_bplus": ["sam2.1_hiera_base_plus.pt"],
    "sam2_hiera_l": ["sam2.1_hiera_large.pt"],
    # trunk + SAM2's FPN neck: the neck keys (image_encoder.neck.*) load strictly as well
    "sam2_hiera_t_fpn": ["sam2.1_hiera_tiny.pt"],
    "sam2_hiera_s_fpn": ["sam2.1_hiera_small.pt"],
    "sam2_hiera_bplus_fpn": ["sam2.1_hiera_base_plus.pt"],
    "sam2_hiera_l_fpn": ["sam2.1_hiera_large.pt"],
    "swin_b": ["swin_base_patch4_window12_384_22k.pth"],
}
SLOW = {"dinov3_vitb16", "dinov3_vitl16", "dinov2_vitb14", "dinov2_vitl14", "dinov2_vitb14_reg", "dinov2_vitl14_reg",
        "samvit_l", "sam2_hiera_s", "sam2_hiera_bplus", "sam2_hiera_l", "swin_b", "sam2_hiera_t_fpn", "sam2_hiera_s_fpn",
        "sam2_hiera_bplus_fpn", "sam2_hiera_l_fpn"}
#: SAM2 releases whose trunk keys equal their SAM2.1 twin's (checked below without building a model), so loading the
#: twin covers them.
SAM2_TWINS = {f"sam2_hiera_{s}.pt": f"sam2.1_hiera_{s}.pt" for s in ("small", "base_plus", "large")}
#: scaled-down architectures for CPU runs: no released weights exist.
NO_RELEASE = {"dinov3_micro16", "sam2_hiera_micro"}
ZOO = list_encoders()  # at collection time: the encoders mgfusion registers, before any test adds its own


def load_manifest(fname: str) -> dict:
    with gzip.open(MANIFESTS / f"{fname}.json.gz", "rt") as f:
        return json.load(f)


def write_zero_checkpoint(manifest: dict, path: Path, keys: dict | None = None) -> Path:
    """Save zeros of every manifest shape (stride-0 views of one zero: files of a few KB) in the release's wrapping."""
    zeros: dict[torch.dtype, torch.Tensor] = {}
    state = {}
    for key, shape in (keys if keys is not None else manifest["keys"]).items():
        dtype = getattr(torch, manifest["dtypes"].get(key, "float32"))
        state[key] = zeros.setdefault(dtype, torch.zeros((), dtype=dtype)).expand(shape)
    torch.save({manifest["wrapping"]: state} if manifest["wrapping"] else state, path)
    return path


CASES = [pytest.param(name, fname, id=fname, marks=[pytest.mark.slow] if name in SLOW else [])
         for name, files in RELEASES.items() for fname in files]


def test_every_released_encoder_has_a_manifest():
    assert set(RELEASES) | NO_RELEASE == set(ZOO), "classify new encoders: add their release manifest or NO_RELEASE"
    on_disk = {p.name.removesuffix(".json.gz") for p in MANIFESTS.glob("*.json.gz")}
    assert on_disk == {f for files in RELEASES.values() for f in files} | set(SAM2_TWINS)


def _trunk(manifest: dict) -> dict:
    return {k: v for k, v in manifest["keys"].items() if k.startswith("image_encoder.trunk.")}


@pytest.mark.parametrize("sam2,sam21", sorted(SAM2_TWINS.items()))
def test_sam2_trunk_keys_equal_their_sam21_twin(sam2, sam21):
    """SAM2 and SAM2.1 differ outside the image-encoder trunk only, which the converter drops."""
    a, b = load_manifest(sam2), load_manifest(sam21)
    assert a["wrapping"] == b["wrapping"] == "model"
    assert len(_trunk(a)) > 100 and _trunk(a) == _trunk(b)
    assert set(a["keys"]) != set(b["keys"])  # the versions do differ elsewhere (e.g. no_obj_embed_spatial)


@pytest.mark.parametrize("name,fname", CASES)
def test_official_release_loads_strictly(name, fname, tmp_path):
    manifest = load_manifest(fname)
    assert manifest["file"] == fname and manifest["source"]["commit"]
    path = write_zero_checkpoint(manifest, tmp_path / fname)
    enc = build_encoder(name, weights=str(path))  # strict: raises CheckpointMismatchError on any key difference
    trunk = enc.trunk.state_dict()
    assert trunk, name
    loaded_nonzero = [k for k, v in trunk.items() if v.is_floating_point() and bool(v.ne(0).any())]
    assert loaded_nonzero == [], f"trunk tensors not overwritten by the checkpoint: {loaded_nonzero[:5]}"


def _trunk_key(manifest: dict, pattern: str) -> str:
    return next(k for k in manifest["keys"] if pattern in k)


@pytest.mark.parametrize("name,family,fname,pattern,timm_key", [
    ("sam2_hiera_t", "sam2", "sam2.1_hiera_tiny.pt", "trunk.blocks.3.attn.qkv.weight", "blocks.3.attn.qkv.weight"),
    ("dinov2_vits14_reg", "dinov2", "dinov2_vits14_reg4_pretrain.pth", "blocks.5.mlp.fc1.bias",
     "blocks.5.mlp.fc1.bias"),
])
def test_removed_or_renamed_key_fails_naming_it(name, family, fname, pattern, timm_key, tmp_path):
    """The strict loader that ``build_encoder(weights=...)`` uses names a removed key, and a renamed one twice."""
    manifest = load_manifest(fname)
    key = _trunk_key(manifest, pattern)
    trunk = build_encoder(name).trunk
    removed = {k: v for k, v in manifest["keys"].items() if k != key}
    path = write_zero_checkpoint(manifest, tmp_path / f"removed_{fname}", removed)
    with pytest.raises(CheckpointMismatchError) as exc:
        load_weights_into(trunk, path, family)
    assert f"missing keys (1): {timm_key}" in str(exc.value) and str(path) in str(exc.value)

    def rename(k: str) -> str:
        return k.replace(".weight", ".weightx").replace(".bias", ".biasx")

    renamed = {(rename(k) if k == key else k): v for k, v in manifest["keys"].items()}
    path = write_zero_checkpoint(manifest, tmp_path / f"renamed_{fname}", renamed)
    with pytest.raises(CheckpointMismatchError) as exc:
        load_weights_into(trunk, path, family)
    msg = str(exc.value)
    assert f"missing keys (1): {timm_key}" in msg and f"unexpected keys (1): {rename(timm_key)}" in msg
