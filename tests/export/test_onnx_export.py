"""tools/export_model.py on a run folder of the micro fused model (fusion_micro_d3s2: DINOv3 master + SAM2 Hiera
auxiliary, mask2former_tiny, random init): onnxruntime matches PyTorch within 1e-4 at two input sizes and two batch
sizes from one export (dynamic B/H/W). About 2 minutes on 2 CPU cores, most of it tracing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from omegaconf import OmegaConf

from mgfusion.engine import AtomicCheckpointer
from mgfusion.export import OUTPUT_NAMES, build_trained_model, load_config

ROOT = Path(__file__).resolve().parents[2]
EXPORT = ROOT / "tools" / "export_model.py"
MICRO = ["model=mask2former_tiny", "dataset=synthetic_semantic", "device=cpu"]


def make_run_dir(tmp_path_factory, backbone: str) -> Path:
    """A run folder as tools/train_net.py leaves it: the resolved config.yaml and model_final.pth."""
    out = tmp_path_factory.mktemp(f"micro_run_{backbone}")
    overrides = [f"backbone={backbone}", *MICRO, f"output_dir={out}", f"dataset.register.root={out.parent / 'data'}"]
    cfg = load_config(None, overrides)
    torch.manual_seed(0)
    model = build_trained_model(cfg, None, torch.device("cpu"))
    (out / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.to_container(cfg, resolve=True)))
    AtomicCheckpointer(model, str(out)).save("model_final", iteration=0)
    return out


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A single-encoder run folder, for the checks that stop before tracing."""
    return make_run_dir(tmp_path_factory, "dinov3_micro16")


def run_export(run: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONWARNINGS="ignore", OMP_NUM_THREADS="2")
    return subprocess.run([sys.executable, str(EXPORT), str(run), *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=1200, check=False)


@pytest.mark.slow
def test_micro_fused_model_exports_with_dynamic_shapes_and_matches_pytorch(tmp_path_factory, tmp_path):
    run_dir = make_run_dir(tmp_path_factory, "fusion_micro_d3s2")
    onnx_path = tmp_path / "micro.onnx"
    done = run_export(run_dir, f"output={onnx_path}", "check_sizes=[[64,96],[96,128]]")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    parity_lines = [line for line in done.stdout.splitlines() if line.startswith("[parity]")]
    assert len(parity_lines) == 2 and all(line.endswith("-> ok") for line in parity_lines), done.stdout

    proto = onnx.load(str(onnx_path))
    assert proto.opset_import[0].version == 18 or any(o.domain == "" and o.version == 18 for o in proto.opset_import)
    (image_input,) = proto.graph.input
    dims = image_input.type.tensor_type.shape.dim
    assert [d.dim_param != "" for d in dims] == [True, False, True, True]  # B, H, W symbolic; 3 channels fixed
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["mgfusion.size_divisibility"] == "32"
    assert json.loads(meta["mgfusion.num_classes"]) == 6 and len(json.loads(meta["mgfusion.class_names"])) == 6
    assert "GridSample" in {node.op_type for node in proto.graph.node}

    # independent check: the run folder's PyTorch model vs onnxruntime on new inputs of two other shapes
    cfg = load_config(run_dir)
    model = build_trained_model(cfg, run_dir / "model_final.pth", torch.device("cpu"))
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    generator = torch.Generator().manual_seed(7)
    for batch, height, width in [(1, 96, 64), (3, 64, 128)]:
        images = torch.randint(0, 256, (batch, 3, height, width), generator=generator, dtype=torch.uint8)
        captured = {}
        hook = model.transformer_decoder.register_forward_hook(lambda _m, _i, out, store=captured: store.update(out))
        with torch.no_grad():
            results = model([{"image": im} for im in images])
        hook.remove()
        sem_seg, logits, masks = session.run(list(OUTPUT_NAMES), {"images": images.float().numpy()})
        assert sem_seg.shape == (batch, 6, height, width) and masks.shape == (batch, 16, height // 4, width // 4)
        expected = torch.stack([r["sem_seg"] for r in results]).numpy()
        assert np.abs(sem_seg - expected).max() <= 1e-4
        assert np.abs(logits - captured["pred_logits"].numpy()).max() <= 1e-4
        assert np.abs(masks - captured["pred_masks"].numpy()).max() <= 1e-4
        assert expected.std() > 1e-3  # not a constant map


def test_export_refuses_bad_sizes_and_existing_output(run_dir, tmp_path):
    existing = tmp_path / "exists.onnx"
    existing.write_bytes(b"keep me")
    done = run_export(run_dir, f"output={existing}")
    assert done.returncode == 2 and "exists" in done.stderr and existing.read_bytes() == b"keep me"
    done = run_export(run_dir, f"output={tmp_path / 'x.onnx'}", "check_sizes=[[60,96]]")
    assert done.returncode == 2 and "multiples of 32" in done.stderr
    done = run_export(run_dir, f"output={tmp_path / 'x.onnx'}", "opset=13")
    assert done.returncode == 2 and "GridSample" in done.stderr
    done = run_export(run_dir, f"output={tmp_path / 'x.onnx'}", "colour=red")
    assert done.returncode == 2 and "unknown options ['colour']" in done.stderr


@pytest.mark.parametrize("hw", [(14, 21), (16, 16), (7, 30)])
def test_traceable_hiera_windows_give_timms_tensors(hw):
    """The trace-friendly window helpers swapped in during export compute exactly what timm's do."""
    import timm.models.hieradet_sam2 as hiera

    from mgfusion.export.onnx_export import traceable_hiera_windows

    originals = (hiera._calc_pad, hiera.window_partition, hiera.window_unpartition)
    x = torch.randn(2, *hw, 5)
    block = hiera.MultiScaleBlock(dim=5, dim_out=5, num_heads=1, window_size=4).eval()
    with torch.no_grad():
        expected = block(x)
        with traceable_hiera_windows():
            assert hiera.window_partition is not originals[1]
            for window in [(4, 4), (3, 5), (8, 7)]:
                padded = originals[0](*hw, window)
                assert hiera._calc_pad(*hw, window) == padded
                xp = torch.nn.functional.pad(x, (0, 0, 0, padded[3], 0, padded[2]))
                windows = hiera.window_partition(xp, window)
                assert torch.equal(windows, originals[1](xp, window))
                assert torch.equal(hiera.window_unpartition(windows, window, padded[:2]),
                                   originals[2](windows, window, padded[:2]))
            assert torch.equal(block(x), expected)  # a windowed block through the swapped helpers
    assert (hiera._calc_pad, hiera.window_partition, hiera.window_unpartition) == originals  # restored
