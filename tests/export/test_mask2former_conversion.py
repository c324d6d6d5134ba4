"""Official Mask2Former head (PyPI maskformer2==0.1, installed without dependencies by scripts/setup_env.sh) with
random weights -> tools/convert_checkpoint.py's mapping -> mgfusion's head loaded strictly: the same class logits and
mask logits for every decoder layer, on the same multi-scale features."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from detectron2.layers import ShapeSpec
from omegaconf import OmegaConf
from torch import nn

from benchmarks.mask2former_speed import import_original_mask2former
from mgfusion.compat import (
    UnmappedKeysError,
    check_against_model,
    compare_head_settings,
    convert_mask2former_state_dict,
    infer_head_settings,
    read_official_checkpoint,
    read_official_config,
)
from mgfusion.export import build_trained_model, load_config
from mgfusion.modeling import (
    MSDeformAttnPixelDecoder,
    MultiScaleMaskedTransformerDecoder,
)

ROOT = Path(__file__).resolve().parents[2]
NAMES, STRIDES = ["res2", "res3", "res4", "res5"], [4, 8, 16, 32]
# distinct channels per level catch a level-order mix-up; hidden_dim != conv_dim gives the decoder its input_proj
CHANNELS = [24, 40, 56, 72]
HEAD = {"conv_dim": 64, "mask_dim": 48, "heads": 4, "enc_layers": 2, "enc_ffn": 96, "hidden_dim": 32, "dec_ffn": 80,
        "dec_layers": 4, "queries": 8, "classes": 5}
SHAPES = {n: ShapeSpec(channels=c, stride=s) for n, c, s in zip(NAMES, CHANNELS, STRIDES)}


@pytest.fixture(scope="module")
def original():
    return import_original_mask2former()


def build_official(original, seed: int = 0) -> nn.Module:
    """Original modules under their checkpoint prefixes (sem_seg_head.pixel_decoder / .predictor), random weights."""
    pixel_decoder = original.PixelDecoder(
        SHAPES, transformer_dropout=0.0, transformer_nheads=HEAD["heads"], transformer_dim_feedforward=HEAD["enc_ffn"],
        transformer_enc_layers=HEAD["enc_layers"], conv_dim=HEAD["conv_dim"], mask_dim=HEAD["mask_dim"], norm="GN",
        transformer_in_features=["res3", "res4", "res5"], common_stride=4)
    predictor = original.TransformerDecoder(
        in_channels=HEAD["conv_dim"], mask_classification=True, num_classes=HEAD["classes"],
        hidden_dim=HEAD["hidden_dim"], num_queries=HEAD["queries"], nheads=HEAD["heads"],
        dim_feedforward=HEAD["dec_ffn"], dec_layers=HEAD["dec_layers"], pre_norm=False, mask_dim=HEAD["mask_dim"],
        enforce_input_project=False)
    model = nn.Module()
    model.sem_seg_head = nn.Module()
    model.sem_seg_head.pixel_decoder = pixel_decoder
    model.sem_seg_head.predictor = predictor
    randomize(model, seed)
    return model.eval()


def randomize(model: nn.Module, seed: int) -> None:
    """Every parameter random (the official init zeroes the offset/attention projections, which would hide a
    fusion-order mistake): fan-in scaled weights, small biases, norm scales around 1, offsets of a few pixels."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=generator)
            if "norm" in name and name.endswith("weight") or ".input_proj." in name and ".1.weight" in name:
                p.copy_(1.0 + 0.2 * noise)
            elif "sampling_offsets.bias" in name:
                p.copy_(2.0 * noise)
            elif p.dim() == 1:
                p.copy_(0.1 * noise)
            else:
                p.copy_(noise / p[0].numel() ** 0.5)


def build_mgfusion(impl: str) -> nn.Module:
    torch.manual_seed(123)  # any init: every parameter is overwritten by the strict load
    model = nn.Module()
    model.pixel_decoder = MSDeformAttnPixelDecoder(
        SHAPES, conv_dim=HEAD["conv_dim"], mask_dim=HEAD["mask_dim"], norm="GN", num_heads=HEAD["heads"], num_points=4,
        num_layers=HEAD["enc_layers"], dim_feedforward=HEAD["enc_ffn"], deform_attn_impl=impl)
    model.transformer_decoder = MultiScaleMaskedTransformerDecoder(
        in_channels=HEAD["conv_dim"], num_classes=HEAD["classes"], mask_dim=HEAD["mask_dim"],
        hidden_dim=HEAD["hidden_dim"], num_queries=HEAD["queries"], num_heads=HEAD["heads"],
        dim_feedforward=HEAD["dec_ffn"], num_layers=HEAD["dec_layers"])
    return model.eval()


def features(batch: int = 2, height: int = 96, width: int = 128, seed: int = 1) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {n: torch.randn(batch, c, height // s, width // s, generator=generator)
            for n, c, s in zip(NAMES, CHANNELS, STRIDES)}


def official_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The module's tensors plus what a real checkpoint carries besides the head."""
    state = dict(model.state_dict())
    state["backbone.res2.0.conv1.weight"] = torch.randn(8, 3, 3, 3)
    state["criterion.empty_weight"] = torch.tensor([1.0] * HEAD["classes"] + [0.1])
    return state


@pytest.mark.parametrize("impl", ["grid_sample", "embedding_bag"])
def test_converted_head_reproduces_every_decoder_layer(original, impl):
    official = build_official(original)
    converted, report = convert_mask2former_state_dict(official_state(official))
    ours = build_mgfusion(impl)
    check_against_model(converted, ours)
    ours.load_state_dict(converted, strict=True)
    assert len(report.fused) == 2 * HEAD["enc_layers"]  # weight + bias of each sampling projection
    assert len(report.split) == 2 * 2 * HEAD["dec_layers"]  # self + cross attention, weight + bias
    assert report.backbone == ["backbone.res2.0.conv1.weight"] and not report.backbone_kept
    assert "0.1" in report.ignored["criterion.empty_weight"]

    feats = features()
    with torch.no_grad():
        mask_features, _, multi_scale = official.sem_seg_head.pixel_decoder.forward_features(feats)
        theirs = official.sem_seg_head.predictor(multi_scale, mask_features)
        our_mask_features, our_multi_scale = ours.pixel_decoder(feats)
        mine = ours.transformer_decoder(our_multi_scale, our_mask_features, return_intermediate=True)
    assert (our_mask_features - mask_features).abs().max() <= 1e-4
    their_layers = [*theirs["aux_outputs"], theirs]
    assert len(their_layers) == HEAD["dec_layers"] + 1 == mine["layer_logits"].shape[0]
    for i, layer in enumerate(their_layers):
        logits_diff = (mine["layer_logits"][i] - layer["pred_logits"]).abs().max().item()
        masks_diff = (mine["layer_masks"][i] - layer["pred_masks"]).abs().max().item()
        assert logits_diff <= 1e-4 and masks_diff <= 1e-4, f"layer {i}: logits {logits_diff:.2e}, masks {masks_diff:.2e}"
    # the comparison is not vacuous: predictions vary over queries and pixels
    assert theirs["pred_masks"].std() > 0.1 and theirs["pred_logits"].std() > 0.1


def test_reads_detectron2_pkl_and_infers_sizes(original, tmp_path):
    official = build_official(original)
    path = tmp_path / "model_final.pkl"
    arrays = {k: v.numpy() for k, v in official_state(official).items()}
    with open(path, "wb") as f:
        pickle.dump({"model": arrays, "__author__": "test", "matching_heuristics": False}, f)
    state = read_official_checkpoint(path)
    assert sorted(state) == sorted(arrays)
    assert all(torch.equal(state[k], torch.from_numpy(arrays[k])) for k in arrays)
    assert infer_head_settings(state) == {
        "num_classes": HEAD["classes"], "num_queries": HEAD["queries"], "hidden_dim": HEAD["hidden_dim"],
        "dec_dim_feedforward": HEAD["dec_ffn"], "conv_dim": HEAD["conv_dim"], "num_transformer_levels": 3,
        "mask_dim": HEAD["mask_dim"], "enc_dim_feedforward": HEAD["enc_ffn"], "dec_layers": HEAD["dec_layers"],
        "enc_layers": HEAD["enc_layers"]}


def test_pkl_with_arbitrary_objects_is_refused(tmp_path):
    path = tmp_path / "evil.pkl"
    with open(path, "wb") as f:
        pickle.dump({"model": {"x": torch.nn.Identity()}}, f)
    with pytest.raises(pickle.UnpicklingError, match="refusing to unpickle"):
        read_official_checkpoint(path)


def test_unmapped_keys_are_named_in_both_directions(original):
    state = official_state(build_official(original))
    state["sem_seg_head.predictor.static_query.weight"] = torch.zeros(8, 32)
    with pytest.raises(UnmappedKeysError, match=r"static_query\.weight"):
        convert_mask2former_state_dict(state)

    state = official_state(build_official(original))
    del state["sem_seg_head.predictor.transformer_ffn_layers.3.linear2.bias"]
    converted, _ = convert_mask2former_state_dict(state)
    with pytest.raises(UnmappedKeysError, match=r"transformer_decoder\.layers\.3\.ffn\.ffn\.3\.bias"):
        check_against_model(converted, build_mgfusion("grid_sample"))

    state = official_state(build_official(original))
    del state["sem_seg_head.pixel_decoder.transformer.encoder.layers.1.self_attn.attention_weights.weight"]
    with pytest.raises(UnmappedKeysError, match=r"layers\.1\.self_attn\.attention_weights\.weight"):
        convert_mask2former_state_dict(state)


def test_shape_mismatch_names_key_and_both_shapes(original):
    converted, _ = convert_mask2former_state_dict(official_state(build_official(original)))
    converted["transformer_decoder.query_feat.weight"] = torch.zeros(100, HEAD["hidden_dim"])
    with pytest.raises(UnmappedKeysError, match=r"query_feat\.weight: checkpoint \(100, 32\) vs model \(8, 32\)"):
        check_against_model(converted, build_mgfusion("grid_sample"))


# ---- tools/convert_checkpoint.py as a user runs it -----------------------------------------------------------------

CONVERT = ROOT / "tools" / "convert_checkpoint.py"
# the micro model of the configs, with the two settings the official head fixes (4 sampling points, FFN 1024)
MICRO = ["backbone=fusion_micro_d3s2", "model=mask2former_tiny", "dataset=synthetic_semantic",
         "model.pixel_decoder.dim_feedforward=1024"]
OFFICIAL_BASE = """\
MODEL:
  SEM_SEG_HEAD:
    NAME: MaskFormerHead
    IN_FEATURES: [res2, res3, res4, res5]
    NUM_CLASSES: 6
    CONVS_DIM: 64
    MASK_DIM: 64
    NORM: GN
    PIXEL_DECODER_NAME: MSDeformAttnPixelDecoder
    DEFORMABLE_TRANSFORMER_ENCODER_IN_FEATURES: [res3, res4, res5]
    COMMON_STRIDE: 4
    TRANSFORMER_ENC_LAYERS: 2
  MASK_FORMER:
    TRANSFORMER_DECODER_NAME: MultiScaleMaskedTransformerDecoder
    DEEP_SUPERVISION: true
    NO_OBJECT_WEIGHT: 0.1
    CLASS_WEIGHT: 2.0
    MASK_WEIGHT: 5.0
    DICE_WEIGHT: 5.0
    HIDDEN_DIM: 64
    NHEADS: 4
    DROPOUT: 0.0
    DIM_FEEDFORWARD: 128
    PRE_NORM: false
    ENFORCE_INPUT_PROJ: false
    SIZE_DIVISIBILITY: 32
    DEC_LAYERS: 4
    TRAIN_NUM_POINTS: 1024
"""
OFFICIAL_CHILD = """\
_BASE_: base/Base-Synthetic.yaml
MODEL:
  MASK_FORMER:
    NUM_OBJECT_QUERIES: 16
    TEST:
      SEMANTIC_ON: true
      OBJECT_MASK_THRESHOLD: 0.8
      OVERLAP_THRESHOLD: 0.8
"""


def micro_official_head(original) -> nn.Module:
    """The official head with mask2former_tiny's sizes on fusion_micro_d3s2's channels (32/64/96/128)."""
    shapes = {n: ShapeSpec(channels=c, stride=s) for n, c, s in zip(NAMES, [32, 64, 96, 128], STRIDES)}
    model = nn.Module()
    model.sem_seg_head = nn.Module()
    model.sem_seg_head.pixel_decoder = original.PixelDecoder(
        shapes, transformer_dropout=0.0, transformer_nheads=4, transformer_dim_feedforward=1024,
        transformer_enc_layers=2, conv_dim=64, mask_dim=64, norm="GN", transformer_in_features=["res3", "res4", "res5"],
        common_stride=4)
    model.sem_seg_head.predictor = original.TransformerDecoder(
        in_channels=64, mask_classification=True, num_classes=6, hidden_dim=64, num_queries=16, nheads=4,
        dim_feedforward=128, dec_layers=3, pre_norm=False, mask_dim=64, enforce_input_project=False)
    randomize(model, seed=3)
    return model


def run_convert(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    return subprocess.run([sys.executable, str(CONVERT), *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600, check=False)


def test_convert_cli_on_a_pkl_with_official_config(original, tmp_path):
    official = micro_official_head(original)
    pkl = tmp_path / "model_final_m2f.pkl"
    with open(pkl, "wb") as f:
        pickle.dump({"model": {k: v.numpy() for k, v in official_state(official).items()}, "__author__": "test"}, f)
    (tmp_path / "base").mkdir()
    (tmp_path / "base" / "Base-Synthetic.yaml").write_text(OFFICIAL_BASE)
    (tmp_path / "m2f.yaml").write_text(OFFICIAL_CHILD)
    data = f"dataset.register.root={tmp_path / 'data'}"
    out = tmp_path / "head.pth"

    # without the 4 sampling points of the official encoder: an architecture mismatch, with the fix named
    done = run_convert(str(pkl), str(out), *MICRO, data, "--official-config", str(tmp_path / "m2f.yaml"))
    assert done.returncode == 2 and not out.exists()
    assert "enc_num_points: official 4 (fixed in Mask2Former) vs mgfusion 2" in done.stdout
    assert "model.pixel_decoder.num_points=4" in done.stdout

    done = run_convert(str(pkl), str(out), *MICRO, data, "model.pixel_decoder.num_points=4",
                       "--official-config", str(tmp_path / "m2f.yaml"))
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "fused 4 pairs" in done.stdout and "backbone: 1 tensors dropped" in done.stdout
    # inference/training settings that differ are listed, not fatal (Mask2Former's default top-k is 100 too)
    assert "[inference] object_mask_threshold" not in done.stdout
    assert "[training] train_num_points" not in done.stdout
    saved = torch.load(out, weights_only=True)
    assert saved["mgfusion_conversion"]["backbone"] == "dropped"
    head = saved["model"]
    assert all(k.startswith(("pixel_decoder.", "transformer_decoder.")) for k in head)
    assert torch.equal(head["transformer_decoder.query_feat.weight"],
                       official.sem_seg_head.predictor.query_feat.weight)

    # the file loads into the model of that config: every head parameter filled, only the backbone left out
    cfg = load_config(None, [*MICRO, data, "model.pixel_decoder.num_points=4", "device=cpu"])
    model = build_trained_model(cfg, None, torch.device("cpu"))
    missing, unexpected = model.load_state_dict(head, strict=False)
    assert not unexpected and missing and all(k.startswith("backbone.") for k in missing)

    # an existing output is kept
    done = run_convert(str(pkl), str(out), *MICRO, data, "model.pixel_decoder.num_points=4")
    assert done.returncode == 2 and "exists" in done.stderr


def test_official_config_comparison_with_base_chain_and_defaults(tmp_path):
    (tmp_path / "Base-Cityscapes.yaml").write_text(OFFICIAL_BASE.replace("NUM_CLASSES: 6", "NUM_CLASSES: 19")
                                                   .replace("CONVS_DIM: 64", "CONVS_DIM: 256")
                                                   .replace("MASK_DIM: 64", "MASK_DIM: 256")
                                                   .replace("TRANSFORMER_ENC_LAYERS: 2", "TRANSFORMER_ENC_LAYERS: 6")
                                                   .replace("HIDDEN_DIM: 64", "HIDDEN_DIM: 256")
                                                   .replace("NHEADS: 4", "NHEADS: 8")
                                                   .replace("DIM_FEEDFORWARD: 128", "DIM_FEEDFORWARD: 2048")
                                                   .replace("DEC_LAYERS: 4", "DEC_LAYERS: 10")
                                                   .replace("TRAIN_NUM_POINTS: 1024", "TRAIN_NUM_POINTS: 12544"))
    (tmp_path / "child.yaml").write_text("_BASE_: Base-Cityscapes.yaml\nMODEL:\n  MASK_FORMER:\n"
                                         "    NUM_OBJECT_QUERIES: 200\n    TEST:\n"
                                         "      SEM_SEG_POSTPROCESSING_BEFORE_INFERENCE: true\n")
    official = read_official_config(tmp_path / "child.yaml")
    assert official["MODEL"]["SEM_SEG_HEAD"]["NUM_CLASSES"] == 19  # from the base
    model_cfg = OmegaConf.to_container(load_config(None, ["dataset=cityscapes_semantic"]).model, resolve=True)
    mismatches = {m.setting: m for m in compare_head_settings(official, model_cfg)}
    # mgfusion's default head is Mask2Former's: only the two values this YAML changes, plus the unset test
    # thresholds whose Mask2Former defaults (0.0) differ from mgfusion's panoptic defaults (0.8)
    assert set(mismatches) == {"num_queries", "sem_seg_postprocess_before_inference", "object_mask_threshold",
                               "overlap_threshold"}
    assert mismatches["num_queries"].kind == "architecture" and mismatches["num_queries"].official == 200
    assert mismatches["num_queries"].override == "model.num_queries=200"
    assert mismatches["object_mask_threshold"].official_source == "Mask2Former default"
    assert mismatches["sem_seg_postprocess_before_inference"].override == \
        "model.sem_seg_postprocess_before_inference=true"

    with pytest.raises(FileNotFoundError, match="Missing.yaml"):
        (tmp_path / "broken.yaml").write_text("_BASE_: Missing.yaml\n")
        read_official_config(tmp_path / "broken.yaml")
