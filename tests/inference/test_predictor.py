"""Predictor = the evaluation path: same masks and scores as ``eval_only``, files that parse back, strict loading,
resumable and fingerprinted output folders."""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch
from detectron2.evaluation import DatasetEvaluator, DatasetEvaluators
from omegaconf import OmegaConf
from PIL import Image

import mgfusion.engine.evaluation as engine_evaluation
from mgfusion.data.labelmaps import rgb_to_id
from mgfusion.data.synthetic import SYNTHETIC_CATEGORIES
from mgfusion.engine import EVAL_METRICS, run
from mgfusion.inference import (
    FingerprintMismatchError,
    MaskFormerLogits,
    Predictor,
    SemanticScores,
    StrictLoadError,
    filter_instances,
    predict_to_folder,
)
from tests.inference.helpers import compose_tiny, val_images


class _Tap(DatasetEvaluator):
    """Keeps a deep copy of every model output of the evaluation loop, by file name."""

    def __init__(self, store: dict) -> None:
        self.store = store

    def process(self, inputs, outputs):
        for inp, out in zip(inputs, outputs):
            self.store[inp["file_name"]] = copy.deepcopy(out)

    def evaluate(self):
        return None


def _eval_only_outputs(monkeypatch, run_dir: Path, out: Path, *extra: str) -> tuple[dict, dict]:
    """Outputs of ``eval_only`` on the run's final checkpoint (the engine's real loader, model and evaluators)."""
    store: dict = {}
    real = engine_evaluation.inference_on_dataset
    monkeypatch.setattr(engine_evaluation, "inference_on_dataset",
                        lambda model, loader, evaluator: real(model, loader, DatasetEvaluators([_Tap(store), evaluator])))
    cfg = compose_tiny(run_dir, "eval_only=true", f"weights={run_dir / 'model_final.pth'}", *extra)
    cfg.output_dir = str(out)
    run(cfg)
    return store, json.loads((out / EVAL_METRICS).read_text())


def _assert_same(pred, expected, *, atol=0.0):
    torch.testing.assert_close(pred.sem_seg, expected["sem_seg"].cpu(), rtol=0, atol=atol)
    inst = filter_instances(expected["instances"].to("cpu"), score_threshold=0.0, topk=10**6)
    assert len(pred.instances) == len(inst) > 0
    assert torch.equal(pred.instances.pred_masks, inst.pred_masks)
    torch.testing.assert_close(pred.instances.scores, inst.scores, rtol=0, atol=atol)
    assert torch.equal(pred.instances.pred_classes, inst.pred_classes)
    seg, info = expected["panoptic_seg"]
    assert torch.equal(pred.panoptic_seg, seg.cpu()) and pred.segments_info == info
    assert len(info) > 0


def test_predictor_outputs_equal_eval_only_predictions(tiny_run, tmp_path, monkeypatch):
    expected, metrics = _eval_only_outputs(monkeypatch, tiny_run, tmp_path / "eval")
    assert metrics["test_time"]["mode"] == "whole"
    images = val_images(tiny_run)
    assert sorted(expected) == [str(p) for p in images]
    predictor = Predictor(tiny_run, device="cpu", score_threshold=0.0, topk=10**6)
    for pred, path in zip(predictor.predict([str(p) for p in images]), images):
        _assert_same(pred, expected[str(path)])  # batch of 1, same code: bit-identical
    batched = Predictor(tiny_run, device="cpu", score_threshold=0.0, topk=10**6, batch_size=3)
    pred = batched.predict([np.array(Image.open(p).convert("RGB")) for p in images])[1]
    torch.testing.assert_close(pred.sem_seg, expected[str(images[1])]["sem_seg"], rtol=0, atol=1e-5)


def test_sliding_window_evaluation_records_its_mode_and_matches_the_predictor(tiny_run, tmp_path, monkeypatch):
    expected, metrics = _eval_only_outputs(monkeypatch, tiny_run, tmp_path / "eval_slide", "test_time=slide",
                                           "test_time.window=[48,48]")
    assert metrics["test_time"] == {"mode": "slide", "window": [48, 48], "stride": [32, 32], "scales": [1.0],
                                    "flip": False, "window_batch": 1}
    predictor = Predictor(tiny_run, device="cpu", score_threshold=0.0, topk=10**6,
                          test_time={"mode": "slide", "window": [48, 48]})
    path = val_images(tiny_run)[2]
    _assert_same(predictor.predict(str(path)), expected[str(path)])
    whole = Predictor(tiny_run, device="cpu").predict(str(path))
    assert (whole.sem_seg - expected[str(path)]["sem_seg"]).abs().max() > 1e-3  # the mode really changed scores


def test_written_files_parse_back_into_the_same_structures(tiny_run, tmp_path):
    predictor = Predictor(tiny_run, device="cpu", score_threshold=0.0, topk=10**6)
    images = val_images(tiny_run)
    report = predict_to_folder(predictor, str(images[0].parent), tmp_path / "pred", progress=False)
    assert report.written == ["000001", "000002", "000003"] and not report.failed
    names = [c["name"] for c in SYNTHETIC_CATEGORIES]
    for path in images:
        pred, stem = predictor.predict(str(path)), path.stem
        semantic = np.array(Image.open(tmp_path / "pred" / "semantic" / f"{stem}.png"))
        assert semantic.dtype == np.uint8 and np.array_equal(semantic, pred.semantic_labels())

        doc = json.loads((tmp_path / "pred" / "instances" / f"{stem}.json").read_text())
        assert (doc["height"], doc["width"]) == (64, 64) and len(doc["annotations"]) == len(pred.instances)
        masks = mask_util.decode([a["segmentation"] for a in doc["annotations"]]).transpose(2, 0, 1)
        assert np.array_equal(masks.astype(bool), pred.instances.pred_masks.numpy())
        assert [a["score"] for a in doc["annotations"]] == pred.instances.scores.tolist()
        classes = pred.instances.pred_classes.tolist()
        assert [a["category_name"] for a in doc["annotations"]] == [names[c] for c in classes]
        assert [a["category_id"] for a in doc["annotations"]] == [SYNTHETIC_CATEGORIES[c]["id"] for c in classes]
        x0, y0, x1, y1 = pred.instances.pred_boxes.tensor[0].tolist()
        assert doc["annotations"][0]["bbox"] == [x0, y0, x1 - x0, y1 - y0]

        ids = rgb_to_id(np.array(Image.open(tmp_path / "pred" / "panoptic" / f"{stem}.png")))
        assert np.array_equal(ids, pred.panoptic_seg.numpy())
        segments = json.loads((tmp_path / "pred" / "panoptic" / f"{stem}.json").read_text())["segments_info"]
        assert [s["id"] for s in segments] == [s["id"] for s in pred.segments_info]
        assert [s["category_id"] for s in segments] == [SYNTHETIC_CATEGORIES[s["category_id"]]["id"]
                                                        for s in pred.segments_info]
        assert [s["area"] for s in segments] == [int((ids == s["id"]).sum()) for s in segments]

        overlay = np.array(Image.open(tmp_path / "pred" / "overlay" / f"{stem}.png"))
        assert overlay.shape == (64, 64, 3) and not np.array_equal(overlay, np.array(Image.open(path)))
    index = json.loads((tmp_path / "pred" / "panoptic.json").read_text())
    assert [a["file_name"] for a in index["annotations"]] == ["000001.png", "000002.png", "000003.png"]
    assert [c["name"] for c in index["categories"]] == names


def test_rerun_skips_finished_inputs_and_refuses_other_settings(tiny_run, tmp_path):
    folder = val_images(tiny_run)[0].parent
    out = tmp_path / "pred"
    predictor = Predictor(tiny_run, device="cpu", test_time={"flip": True})
    first = predict_to_folder(predictor, str(folder), out, outputs=["semantic"], progress=False)
    stamp = os.stat(out / "semantic" / "000002.png").st_mtime_ns
    (out / "semantic" / "000003.png").unlink()  # an output lost (e.g. killed before it was written)
    again = predict_to_folder(predictor, str(folder), out, outputs=["semantic"], progress=False)
    assert first.written == ["000001", "000002", "000003"]
    assert again.skipped == ["000001", "000002"] and again.written == ["000003"]
    assert os.stat(out / "semantic" / "000002.png").st_mtime_ns == stamp

    other = Predictor(tiny_run, device="cpu", score_threshold=0.9, test_time={"flip": False})
    with pytest.raises(FingerprintMismatchError, match="score_threshold.*test_time|test_time.*score_threshold"):
        predict_to_folder(other, str(folder), out, outputs=["semantic"], progress=False)
    with pytest.raises(FingerprintMismatchError, match="outputs"):
        predict_to_folder(predictor, str(folder), out, outputs=["semantic", "overlay"], progress=False)


def test_loading_is_strict_and_names_the_keys(tiny_run, tmp_path):
    state = torch.load(tiny_run / "model_final.pth", weights_only=True)
    model = state["model"]
    key = "transformer_decoder.query_feat.weight"
    model["extra.weight"] = torch.zeros(1)
    removed = next(k for k in model if k.startswith("pixel_decoder."))
    del model[removed]
    model[key] = torch.zeros(3, 3)
    broken = tmp_path / "broken.pth"
    torch.save(state, broken)
    with pytest.raises(StrictLoadError) as err:
        Predictor(tiny_run, weights=broken, device="cpu")
    text = str(err.value)
    assert "extra.weight" in text and removed in text and f"{key}: checkpoint (3, 3)" in text
    with pytest.raises(FileNotFoundError, match=r"model_0000009.pth does not exist \(checkpoints there: .*model_final"):
        Predictor(tiny_run, checkpoint="model_0000009.pth", device="cpu")


def test_metadata_needs_no_dataset_images_and_arrays_are_accepted(tiny_run, tmp_path):
    cfg = OmegaConf.load(tiny_run / "config.yaml")
    cfg.dataset.register.root = str(tmp_path / "no_such_folder")
    OmegaConf.save(cfg, tmp_path / "config.yaml")
    predictor = Predictor(config=tmp_path / "config.yaml", weights=tiny_run / "model_final.pth", device="cpu")
    assert predictor.classes.names == tuple(c["name"] for c in SYNTHETIC_CATEGORIES)
    assert not (tmp_path / "no_such_folder").exists()
    image = np.array(Image.open(val_images(tiny_run)[0]).convert("RGB"))
    from_array = predictor.predict(image)
    from_tensor = predictor.predict([torch.as_tensor(image).permute(2, 0, 1)])[0]
    assert torch.equal(from_array.sem_seg, from_tensor.sem_seg) and from_array.source == "<array 0>"
    with pytest.raises(ValueError, match="uint8"):
        predictor.predict(image.astype(np.float32))


def test_traceable_semantic_scores_equal_the_models(tiny_run):
    predictor = Predictor(tiny_run, device="cpu")
    model = predictor.model
    images = torch.stack([torch.as_tensor(np.array(Image.open(p).convert("RGB"))).permute(2, 0, 1)
                          for p in val_images(tiny_run)[:2]]).float()
    with torch.no_grad():
        logits, masks = MaskFormerLogits(model)(images)
        scores = SemanticScores(model).eval()(images)
        expected = model.semantic_scores(list(images))
    assert logits.shape == (2, 16, 7) and masks.shape == (2, 16, 16, 16)
    torch.testing.assert_close(scores, torch.stack(expected), rtol=0, atol=1e-5)
