"""Cityscapes evaluators with per-class results, numpy-2 fixes and no writes outside a temporary folder.

Both subclass detectron2's evaluators (same ``process``: predictions are written as the official scripts'
files), but ``evaluate`` differs: it evaluates exactly the images that were processed (detectron2 globs every
ground-truth file and the official script exits the process when one has no prediction), runs the official
scripts quietly under :func:`~mgfusion.evaluation.compat.cityscapes_numpy2_patches`, and adds per-class scores.
"""

from __future__ import annotations

import itertools
import logging
import os
from collections import OrderedDict

from detectron2.evaluation.cityscapes_evaluation import (
    CityscapesInstanceEvaluator as _D2InstanceEvaluator,
)
from detectron2.evaluation.cityscapes_evaluation import (
    CityscapesSemSegEvaluator as _D2SemSegEvaluator,
)
from detectron2.utils import comm

from .compat import cityscapes_numpy2_patches

__all__ = ["CityscapesInstanceEvaluator", "CityscapesSemSegEvaluator"]

logger = logging.getLogger(__name__)
_IMAGE_SUFFIX = "_leftImg8bit"


def _ground_truth_files(gt_dir: str, processed: list[str], suffix: str) -> list[str]:
    """The ground-truth file (``<city>/<stem>_gtFine_<suffix>.png``) of every processed image, sorted."""
    files = []
    for file_name in sorted(set(processed)):
        stem = os.path.splitext(os.path.basename(file_name))[0]
        stem = stem.removesuffix(_IMAGE_SUFFIX)
        path = os.path.join(gt_dir, stem.split("_")[0], f"{stem}_gtFine_{suffix}.png")
        if not os.path.isfile(path):
            raise FileNotFoundError(f"Cityscapes ground truth '{path}' for image '{file_name}' does not exist.")
        files.append(path)
    if not files:
        raise ValueError("No images were processed; nothing to evaluate.")
    return files


class _ProcessedFilesMixin:
    """Records processed files and runs an official cityscapesscripts evaluation on exactly those."""

    def reset(self) -> None:
        super().reset()
        self._processed: list[str] = []

    def process(self, inputs, outputs) -> None:
        super().process(inputs, outputs)
        self._processed.extend(x["file_name"] for x in inputs)

    def _run_official(self, cs_eval, gt_suffix: str, prediction_for) -> tuple[dict, int] | None:
        """Scores of ``cs_eval.evaluateImgLists`` on the processed images (main process; ``None`` elsewhere)."""
        comm.synchronize()
        processed = comm.all_gather(self._processed)
        if comm.get_rank() > 0:
            return None
        gt_files = _ground_truth_files(self._metadata.gt_dir, list(itertools.chain(*processed)), gt_suffix)
        with cityscapes_numpy2_patches(self._temp_dir):
            args = cs_eval.args
            args.predictionPath = os.path.abspath(self._temp_dir)
            args.predictionWalk = None
            args.JSONOutput = False
            args.colorized = False
            args.quiet = True
            args.gtInstancesFile = os.path.join(self._temp_dir, "gtInstances.json")
            predictions = [prediction_for(gt) for gt in gt_files]
            scores = cs_eval.evaluateImgLists(predictions, gt_files, args)
        self._working_dir.cleanup()
        return scores, len(gt_files)


class CityscapesInstanceEvaluator(_ProcessedFilesMixin, _D2InstanceEvaluator):
    """Official Cityscapes instance AP; returns ``{"segm": {"AP", "AP50", "AP-<class>", "AP50-<class>"}}``."""

    def evaluate(self):
        import cityscapesscripts.evaluation.evalInstanceLevelSemanticLabeling as cs_eval

        run = self._run_official(cs_eval, "instanceIds", lambda gt: cs_eval.getPrediction(gt, cs_eval.args))
        if run is None:
            return None
        averages, num_images = run[0]["averages"], run[1]
        result = {"AP": 100.0 * averages["allAp"], "AP50": 100.0 * averages["allAp50%"]}
        for name, scores in averages["classes"].items():
            result[f"AP-{name}"] = 100.0 * float(scores["ap"])
            result[f"AP50-{name}"] = 100.0 * float(scores["ap50%"])
        logger.info("Cityscapes instance AP on %d images: %.2f (AP50 %.2f)", num_images, result["AP"], result["AP50"])
        return OrderedDict(segm=result)


class CityscapesSemSegEvaluator(_ProcessedFilesMixin, _D2SemSegEvaluator):
    """Official Cityscapes pixel-level scores; returns ``{"sem_seg": {"mIoU", "IoU", "iIoU", "IoU_sup", "iIoU_sup",
    "IoU-<class>"}}`` (``mIoU`` = ``IoU``, the mean class IoU over the 19 evaluated classes)."""

    def evaluate(self):
        import cityscapesscripts.evaluation.evalPixelLevelSemanticLabeling as cs_eval

        run = self._run_official(cs_eval, "labelIds", lambda gt: cs_eval.getPrediction(cs_eval.args, gt))
        if run is None:
            return None
        scores, num_images = run
        result = {
            "mIoU": 100.0 * scores["averageScoreClasses"],
            "IoU": 100.0 * scores["averageScoreClasses"],
            "iIoU": 100.0 * scores["averageScoreInstClasses"],
            "IoU_sup": 100.0 * scores["averageScoreCategories"],
            "iIoU_sup": 100.0 * scores["averageScoreInstCategories"],
        }
        for name, iou in scores["classScores"].items():
            result[f"IoU-{name}"] = 100.0 * float(iou)
        logger.info("Cityscapes semantic mIoU on %d images: %.2f", num_images, result["mIoU"])
        return OrderedDict(sem_seg=result)
