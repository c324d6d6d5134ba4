"""The paper's runs as Hydra presets (configs/experiment/<table>/<run>.yaml, docs/experiments.md): every preset
composes as tools/train_net.py composes it, builds its backbone (on the meta device: no weights, no memory), and
has the settings the paper's table gives the run. The expected settings are written out here, from the paper,
independently of the preset files."""

from __future__ import annotations

import functools
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf

from mgfusion.backbones import FixedSizeInput, FusionBackbone
from mgfusion.backbones.registry import MissingWeightsError
from mgfusion.engine.build import build_backbone, random_init_encoders

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "configs"
PRESETS = sorted(p.relative_to(CONFIGS / "experiment").with_suffix("").as_posix()
                 for p in (CONFIGS / "experiment").rglob("*.yaml"))

CS_INST, CS_SEM = "cityscapes_instance", "cityscapes_semantic"
ITERS = {CS_INST: 180000, CS_SEM: 180000, "coco_instance": 368750, "coco_panoptic": 368750,
         "ade20k_semantic": 160000, "kitti360_instance": 180000, "urbansyn_to_cs_instance": 180000,
         "synscapes_to_cs_instance": 180000}
QUERIES = {"coco_instance": 200, "coco_panoptic": 200}  # 100 elsewhere
SWEEP = "4,8,16,32"

# Single encoders: (backbone config, encoder name, trains?)  Fusions: (backbone config, (master, auxiliary), master
# trains?, injection stride, Table 6 stride sweep?)
D3, D3L, D2 = "dinov3_vitb16", "dinov3_vitl16", "dinov2_vitb14"
S, S2, S2L, SWIN = "samvit_b_1024", "sam2_hiera_bplus_fpn_1024", "sam2_hiera_l_fpn_1024", "swin_b"
D3S2 = ("fusion_d3s2", ("dinov3_vitb16", "sam2_hiera_bplus"))
D3S2L = ("fusion_d3s2_large", ("dinov3_vitl16", "sam2_hiera_l"))
D2S2 = ("fusion_d2s2", ("dinov2_vitb14", "sam2_hiera_bplus"))
S2D3 = ("fusion_s2d3_fpn", ("sam2_hiera_bplus_fpn", "dinov3_vitb16"))
INNER = {S: "samvit_b", S2: "sam2_hiera_bplus_fpn", S2L: "sam2_hiera_l_fpn"}  # the 1024x1024 wrappers' encoders


def _single(backbone, trains, dataset=CS_INST):
    return {"dataset": dataset, "backbone": backbone, "encoder": INNER.get(backbone, backbone), "trains": trains}


def _fusion(pair, master_trains=True, stride=16, dataset=CS_INST, sweep=False):
    return {"dataset": dataset, "backbone": pair[0], "pair": pair[1], "trains": master_trains, "stride": stride,
            "sweep": sweep}


EXPECTED = {
    # Table 1: COCO instance segmentation
    "table1/d3_ft": _single(D3, True, "coco_instance"),
    "table1/s2_fz": _single(S2, False, "coco_instance"),
    "table1/d3s2": _fusion(D3S2, dataset="coco_instance"),
    # Table 4: frozen (FZ) and fine-tuned (FT) S, S2, D2, D3; Ours-D3S2 (Table 6 A @16), Ours-S2D3 (Table 6 D @32)
    **{f"table4/{k}_{m}": _single(b, m == "ft") for k, b in (("s", S), ("s2", S2), ("d2", D2), ("d3", D3))
       for m in ("fz", "ft")},
    "table4/d3s2": _fusion(D3S2),
    "table4/s2d3": _fusion(S2D3, master_trains=False, stride=32),
    # Table 6: settings A-D over the strides
    "table6/a": _fusion(D3S2, True, sweep=True), "table6/b": _fusion(D3S2, False, sweep=True),
    "table6/c": _fusion(S2D3, True, sweep=True), "table6/d": _fusion(S2D3, False, sweep=True),
    # Table 10: fine-tuned DINOv2 / DINOv3 masters over the strides
    "table10/d2s2": _fusion(D2S2, sweep=True), "table10/d3s2": _fusion(D3S2, sweep=True),
    # Table 11: the cost of the Table 4 fine-tuned models
    "table11/d2": _single(D2, True), "table11/d3": _single(D3, True), "table11/s": _single(S, True),
    "table11/s2": _single(S2, True), "table11/d3s2": _fusion(D3S2),
}
for _task, _ds in (("instance", CS_INST), ("semantic", CS_SEM)):  # Table 2: Cityscapes instance AP and mIoU
    EXPECTED |= {f"table2/swin_b_ft_{_task}": _single(SWIN, True, _ds), f"table2/d3_ft_{_task}": _single(D3, True, _ds),
                 f"table2/s2_fz_{_task}": _single(S2, False, _ds), f"table2/d3s2_{_task}": _fusion(D3S2, dataset=_ds)}
for _row, _ds in (("ade20k", "ade20k_semantic"), ("kitti360", "kitti360_instance"), ("coco_panoptic", "coco_panoptic")):
    EXPECTED |= {f"table3/{_row}_d3_ft": _single(D3, True, _ds), f"table3/{_row}_s2_fz": _single(S2, False, _ds),
                 f"table3/{_row}_d3s2": _fusion(D3S2, dataset=_ds)}
for _row, _ds in (("urbansyn", "urbansyn_to_cs_instance"), ("synscapes", "synscapes_to_cs_instance")):
    EXPECTED |= {f"table3/{_row}_d3l_ft": _single(D3L, True, _ds), f"table3/{_row}_s2l_fz": _single(S2L, False, _ds),
                 f"table3/{_row}_d3s2l": _fusion(D3S2L, dataset=_ds)}


def _compose(name: str, *overrides: str):
    dataset = EXPECTED[name]["dataset"]
    if not (CONFIGS / "dataset" / f"{dataset}.yaml").is_file():
        pytest.skip(f"configs/dataset/{dataset}.yaml is not in this checkout (the dataset configs of paper Table 3 "
                    "come with the KITTI-360 / UrbanSyn / Synscapes registrations)")
    with initialize_config_dir(config_dir=str(CONFIGS), version_base=None):
        return compose("train", overrides=[f"+experiment={name}", *overrides], return_hydra_config=True)


@functools.cache
def _backbone_on_meta(node_yaml: str) -> torch.nn.Module:
    """The backbone a preset builds, structure only (shared by the presets with the same backbone node)."""
    with torch.device("meta"):
        return instantiate(OmegaConf.create(node_yaml), _convert_="all")


def test_every_preset_is_classified_here():
    assert sorted(EXPECTED) == PRESETS


@pytest.mark.parametrize("name", PRESETS)
def test_preset_composes_with_its_tables_settings(name):
    want = EXPECTED[name]
    cfg = _compose(name)
    dataset = want["dataset"]
    assert cfg.hydra.runtime.choices.backbone == want["backbone"]
    assert (cfg.hydra.runtime.choices.model, cfg.hydra.runtime.choices.solver) == ("mask2former", "adamw_poly")
    assert cfg.dataset.name == dataset and cfg.solver.max_iter == ITERS[dataset]
    assert cfg.model.num_queries == QUERIES.get(dataset, 100)
    assert (cfg.solver.ims_per_batch, cfg.solver.base_lr, cfg.solver.lr_scheduler.power) == (3, 1e-4, 1.0)
    if dataset.startswith("cityscapes") or dataset.endswith("_to_cs_instance"):  # Mask2Former's Cityscapes crops
        assert list(cfg.dataset.train_mapper.crop_size) == [512, 1024]
    sweep = cfg.hydra.sweeper.params
    if "pair" in want:
        b = cfg.backbone
        assert (b.master.name, b.auxiliary.name) == want["pair"]
        assert (b.train_master, b.fusion.stride, b.fusion.operator) == (want["trains"], want["stride"], "replace")
        assert (sweep and OmegaConf.to_container(sweep)) == ({"backbone.fusion.stride": SWEEP} if want["sweep"] else None)
    else:
        node = cfg.backbone.encoder if "encoder" in cfg.backbone else cfg.backbone
        assert node.name == want["encoder"] and node.freeze is not want["trains"] and sweep is None
        if "encoder" in cfg.backbone:  # SAM / SAM2 at their official input size (paper §4.1)
            assert list(cfg.backbone.input_size) == [1024, 1024] and cfg.backbone.fill == "zeros"
        if want["encoder"].startswith("sam2"):
            assert node.reproduce_b9 is False


@pytest.mark.parametrize("name", PRESETS)
def test_preset_builds_its_backbone_with_the_right_parameters_trainable(name):
    want = EXPECTED[name]
    cfg = _compose(name)
    backbone = _backbone_on_meta(OmegaConf.to_yaml(cfg.backbone))
    if "pair" in want:
        assert isinstance(backbone, FusionBackbone) and backbone.inject_strides == (want["stride"],)
        assert (backbone.master_name, backbone.auxiliary_name) == want["pair"]
        assert not any(p.requires_grad for p in backbone.auxiliary.parameters())
        master = {n for n, p in backbone.master.named_parameters() if p.requires_grad}
        discarded = {id(p) for p in backbone.master.level_only_parameters(want["stride"])}
        expected = {n for n, p in backbone.master.named_parameters() if id(p) not in discarded} if want["trains"] \
            else set()
        assert master == expected and (not want["trains"] or master)
    else:
        encoder = backbone.encoder if isinstance(backbone, FixedSizeInput) else backbone
        assert encoder.registry_name == want["encoder"]
        trainable = [p.requires_grad for p in encoder.parameters()]
        assert trainable and all(t is want["trains"] for t in trainable) and encoder.frozen is not want["trains"]


def _documented_weights(name: str) -> dict[str, str]:
    """The ``backbone...weights=PATH/<file>`` settings of the training command in the preset's header comment."""
    text = (CONFIGS / "experiment" / f"{name}.yaml").read_text()
    return dict(re.findall(r"^#\s+(backbone\.[\w.]*weights)=PATH/(\S+?)(?: \\)?$", text, flags=re.MULTILINE))


@pytest.mark.parametrize("name", [n for n in PRESETS if not n.startswith("table11/")])  # table11: table4's models
def test_preset_refuses_random_encoders_until_its_documented_weights_are_given(name):
    """Every encoder of a preset needs its released weights; the command in the preset's comment gives each one."""
    weights = _documented_weights(name)
    n_encoders = 2 if "pair" in EXPECTED[name] else 1
    assert len(weights) == n_encoders, weights
    with pytest.raises(MissingWeightsError, match=re.escape(f"{next(iter(weights))} is not set")):
        random_init_encoders(_compose(name).backbone)
    given = _compose(name, *(f"{k}=/ckpt/{v}" for k, v in weights.items())).backbone
    assert random_init_encoders(given) == []
    expected_files = {"dinov3_vitb16": "dinov3_vitb16_pretrain", "dinov3_vitl16": "dinov3_vitl16_pretrain",
                      "dinov2_vitb14": "dinov2_vitb14_pretrain", "samvit_b": "sam_vit_b_", "swin_b": "swin_base_",
                      "sam2_hiera_bplus": "sam2.1_hiera_base_plus", "sam2_hiera_l": "sam2.1_hiera_large"}
    for key, file in weights.items():  # each file is the release of the encoder it is given to
        encoder = OmegaConf.select(given, key.removeprefix("backbone.").removesuffix(".weights") + ".name",
                                   default=None) or given.name
        assert file.startswith(expected_files[encoder.removesuffix("_fpn")]), (key, encoder, file)


def test_every_preset_is_listed_in_docs_experiments():
    text = (ROOT / "docs" / "experiments.md").read_text()
    missing = [n for n in PRESETS if f"+experiment={n}" not in text]
    assert not missing, f"docs/experiments.md does not list {missing}"


@pytest.mark.parametrize("name,inner", [("table4/s2_fz", "sam2_hiera_bplus_fpn"), ("table4/s_ft", "samvit_b")])
def test_sam_baselines_see_1024x1024_and_hand_the_decoder_its_strides(name, inner):
    """Cityscapes crops (512x1024) and test images (1024x2048) reach SAM / SAM2 as 1024x1024 inputs; the
    detectron2 backbone hands Mask2Former res2..res5 at strides 4/8/16/32 of the whole image."""
    cfg = _compose(name)
    with torch.device("meta"):
        backbone = build_backbone(cfg.backbone)
    wrapper = backbone.encoder
    assert isinstance(wrapper, FixedSizeInput) and wrapper.encoder.registry_name == inner
    assert {k: v.stride for k, v in backbone.output_shape().items()} == {"res2": 4, "res3": 8, "res4": 16, "res5": 32}
    seen = []
    wrapper.encoder.register_forward_pre_hook(lambda module, args: seen.append(tuple(args[0].shape)))
    for h, w, tiles in ((512, 1024, 1), (1024, 2048, 2)):
        seen.clear()
        with torch.no_grad():
            feats = backbone(torch.empty(1, 3, h, w, device="meta"))
        assert seen == [(tiles, 3, 1024, 1024)]
        assert {k: tuple(f.shape[-2:]) for k, f in feats.items()} == {
            f"res{i + 2}": (h // s, w // s) for i, s in enumerate((4, 8, 16, 32))}


def test_command_line_settings_override_a_preset():
    cfg = _compose("table4/d3_fz", "backbone.freeze=false", "solver.max_iter=10", "dataset=synthetic_instance")
    assert (cfg.backbone.freeze, cfg.solver.max_iter, cfg.dataset.name) == (False, 10, "synthetic_instance")


def test_train_net_prints_a_presets_job_config(tmp_path):
    """tools/train_net.py composes a preset as the user runs it (``--cfg job`` prints the job's config)."""
    done = subprocess.run([sys.executable, str(ROOT / "tools" / "train_net.py"), "+experiment=table4/s2d3",
                           "--cfg", "job"], cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    cfg = OmegaConf.create(done.stdout)
    assert (cfg.backbone.master.name, cfg.backbone.auxiliary.name) == ("sam2_hiera_bplus_fpn", "dinov3_vitb16")
    assert (cfg.backbone.train_master, cfg.backbone.fusion.stride, cfg.solver.max_iter) == (False, 32, 180000)


# The overrides docs/training.md (T14-T22) and docs/experiments.md give to restore the authors' or the paper's
# settings in a preset: each composes, builds, and does what the row says.
def _b9(bb):
    return bb.encoder.level_aliases == {32: 16}


def _all_global_attention(bb):
    blocks = bb.encoder.trunk.blocks
    return all(b.window_size == 0 and getattr(b.attn, "rel_pos_h", None) is None for b in blocks) and \
        not bb.encoder.trunk.patch_embed.proj.weight.requires_grad


RESTORING = [
    ("table4/s2_fz", ["backbone.encoder.reproduce_b9=true"], _b9),
    ("table4/s2_fz", ["backbone.input_size=null"], lambda bb: bb.input_size is None),
    ("table4/s_fz", ["backbone.fill=repeat"], lambda bb: bb.fill == "repeat" and bb.input_size == (1024, 1024)),
    ("table4/s_fz", ["+backbone.encoder.timm_kwargs={window_size:0,use_rel_pos:false}", "backbone.encoder.strict=false"],
     _all_global_attention),
    ("table6/c", ["backbone.auxiliary.neck=paper", "backbone.auxiliary.neck_channels=[128,256,512,1024]"],
     lambda bb: bb.auxiliary.out_channels == {4: 128, 8: 256, 16: 512, 32: 1024}),
    ("table4/d3s2", ["backbone.aux_input_size=1024"], lambda bb: bb.aux_input_size == 1024),
]


@pytest.mark.parametrize("name,overrides,check", RESTORING, ids=[" ".join(o) for _, o, _ in RESTORING])
def test_documented_restoring_overrides_apply_to_the_presets(name, overrides, check):
    cfg = _compose(name, *overrides)
    assert check(_backbone_on_meta(OmegaConf.to_yaml(cfg.backbone)))


def test_documented_crop_override_gives_the_authors_synthetic_to_real_crops():
    mapper = _compose("table4/s2_fz", "dataset.train_mapper.crop_size=[1024,1024]", "dataset.train_mapper.min_scale=1.0",
                      "dataset.train_mapper.max_size=2048").dataset.train_mapper
    assert (list(mapper.crop_size), mapper.min_scale, mapper.max_scale, mapper.max_size) == ([1024, 1024], 1.0, 2.0, 2048)


@pytest.mark.slow
def test_sam2_preset_trains_and_evaluates_through_train_net(tmp_path):
    """A SAM2 baseline preset, scaled down (micro Hiera, 64x64 tiles, tiny head, synthetic data), runs end to end."""
    micro = "{embed_dim:32,num_heads:1,stages:[1,1,2,1],global_att_blocks:[3]}"
    done = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "train_net.py"), "+experiment=table4/s2_ft",
         "backbone.encoder.name=sam2_hiera_t_fpn", f"+backbone.encoder.timm_kwargs={micro}",
         "+backbone.encoder.neck_channels=32", "backbone.encoder.weights=random", "backbone.input_size=[64,64]",
         "model=mask2former_tiny", "dataset=synthetic_instance", "solver=smoke_cpu", "solver.max_iter=4",
         "runtime=smoke", "device=cpu", f"output_dir={tmp_path / 'run'}"],
        cwd=tmp_path, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    saved = OmegaConf.load(tmp_path / "run" / "config.yaml")
    assert saved.backbone._target_ == "mgfusion.backbones.FixedSizeInput" and list(saved.backbone.input_size) == [64, 64]
    assert (tmp_path / "run" / "final_metrics.json").is_file() and (tmp_path / "run" / "model_final.pth").is_file()
