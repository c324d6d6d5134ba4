"""Run a profile: wire the stages of :mod:`mgfusion.profiling` together (the paper's RQ2, RQ5, Tables 5/8/9/11).

``Profiler(settings).run()``:

1. imports ``settings.imports`` and installed ``mgfusion.plugins`` entry points (user encoders get registered);
2. checks the metric settings and resolves the rows (:mod:`.entries`): registered encoders (a foundation encoder
   without weights is refused unless ``allow_random_init=true``; mgfusion's ``*micro*`` smoke-test architectures
   are exempt), encoders taken out of training checkpoints (``PART@PATH``, :mod:`.finetuned`) with their initial
   weights, and the control rows (``controls.*``);
3. lists the images (:mod:`.sources`), builds the fingerprint (:mod:`.fingerprint`) and opens the run folder's
   :class:`~.store.ResultStore` (lock, fingerprint check, resume index, shards of a killed sharded run merged) --
   all before any image is decoded;
4. streams the unfinished images through every row (:mod:`.stream`), in this process or, with
   ``num_processes > 1``, sharded across ranks (:mod:`.shards`);
5. writes the report (:class:`~.outputs.ProfileReport`) with the control verdicts, the before/after table and
   the cost tables (:mod:`.cost`).

A run in which no image could be profiled writes the lists of failed / skipped images and raises
:class:`ProfileError` (the tool exits non-zero).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import timm
import torch

import mgfusion
from mgfusion.metrics import list_variants, resolve_config
from mgfusion.utils.device import resolve_device
from mgfusion.utils.plugins import import_modules, load_entry_point_plugins

from .cost import CostTable, cost_input_size, model_costs
from .entries import ProfileEntry, build_entry_encoder, resolve_entries
from .fingerprint import build_fingerprint, images_identity
from .outputs import ProfileReport
from .pca import PCAMaps
from .settings import ProfileConfigError, ProfileSettings
from .shards import collect_meta, merge_timing, shard_worker, split_batches
from .sources import ImageRecord, resolve_source
from .store import ResultStore
from .stream import RowStages, stream_images


class ProfileError(RuntimeError):
    """A profile that cannot produce any result (e.g. every image unreadable or skipped)."""


def check_metric_settings(s: ProfileSettings) -> None:
    """Metric variant and metric hyper-parameters (these need the metric registry)."""
    if s.variant not in list_variants():
        raise ProfileConfigError(f"unknown metric variant {s.variant!r}; valid: {', '.join(list_variants())}")
    try:
        resolve_config(s.variant, dict(s.metric_hparams))
    except ValueError as e:
        raise ProfileConfigError(f"metric_hparams: {e}") from None


def source_identity(s: ProfileSettings) -> dict[str, Any]:
    """Where the images come from: a dataset name, or the absolute path of the folder / COCO JSON (+ image root)."""
    if s.dataset:
        return {"kind": "dataset", "name": s.dataset}
    path = os.path.abspath(os.path.expanduser(str(s.images)))
    if str(s.images).endswith(".json"):
        root = os.path.abspath(os.path.expanduser(s.image_root)) if s.image_root else None
        return {"kind": "coco_json", "path": path, "image_root": root}
    return {"kind": "folder", "path": path}


def _file_size(path: str) -> int | None:
    try:
        return os.path.getsize(path)
    except OSError:
        return None


class Profiler:
    """Runs a profile as described by :class:`ProfileSettings` (see the module docstring for the steps)."""

    def __init__(self, settings: ProfileSettings) -> None:
        self.s = settings
        import_modules(settings.imports)
        self.plugins = load_entry_point_plugins()
        check_metric_settings(settings)
        self.entries: list[ProfileEntry] = resolve_entries(settings)
        self.device = resolve_device(settings.device)
        if self.device.type == "cuda" and settings.num_processes > torch.cuda.device_count():
            raise ProfileConfigError(f"num_processes={settings.num_processes} but only {torch.cuda.device_count()} "
                                     "CUDA devices are visible (one process per GPU); lower num_processes, or use "
                                     "device=cpu for CPU processes")
        self.records: list[ImageRecord] = resolve_source(
            images=settings.images, dataset=settings.dataset, image_root=settings.image_root,
            max_images=settings.max_images)
        self.out = Path(settings.output_dir)

    @property
    def encoder_rows(self) -> list[ProfileEntry]:
        return [e for e in self.entries if e.kind == "encoder"]

    def fingerprint(self) -> dict[str, Any]:
        """This run's fingerprint (contents: :mod:`mgfusion.profiling.fingerprint`)."""
        s = self.s
        metric_cfg = resolve_config(s.variant, dict(s.metric_hparams))
        info = {"weights": {e.name: e.path or e.weights for e in self.entries if e.uses_encoder},
                "batch_size": s.batch_size, "device": str(self.device), "num_processes": s.num_processes,
                "torch": torch.__version__, "timm": timm.__version__, "mgfusion": getattr(mgfusion, "__version__", None)}
        return build_fingerprint(
            metrics={"variant": s.variant, "config": asdict(metric_cfg), "seed": s.seed, "supervised": s.supervised},
            inputs={"resolution": s.resolution, "max_size": s.max_size, "amp": s.amp,
                    "projection_free": s.projection_free},
            encoders={e.name: e.identity for e in self.entries},
            images=images_identity(source_identity(s), [(r.image_id, _file_size(r.path)) for r in self.records]),
            info=info)

    def _order_key(self):
        image_pos = {r.image_id: i for i, r in enumerate(self.records)}
        row_pos = {e.name: i for i, e in enumerate(self.entries)}
        big = len(image_pos) + len(row_pos)
        return lambda rec: (image_pos.get(rec["image_id"], big), row_pos.get(rec["encoder"], big),
                            str(rec["image_id"]), str(rec["encoder"]))

    # ---- main loop -------------------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        """Profile the unfinished images, then write the report; returns the ``summary.json`` payload."""
        names = [e.name for e in self.entries]
        with ResultStore(self.out, self.fingerprint(), fresh=self.s.fresh) as store:
            if store.superseded:
                print(f"[profile] fresh=true: earlier results moved to {store.superseded}")
            recovered = store.merge_shards(self._order_key())
            if recovered:
                print(f"[profile] merged {recovered} records left in {self.out / 'shards'} by an interrupted run")
            collect_meta(self.out)  # reports of an interrupted sharded run: its images are simply redone
            store.log_run({"argv": list(sys.argv), "pid": os.getpid(), "settings": asdict(self.s)})
            todo = [r for r in self.records if any((n, r.image_id) not in store.done for n in names)]
            skipped_done = len(self.records) - len(todo)
            if skipped_done:
                print(f"[profile] resuming in {self.out}: {skipped_done} finished images skipped, {len(todo)} to do")
            pca = PCAMaps(self.out, [r.image_id for r in self.records[: self.s.num_pca_images]])
            failures: dict[str, str] = {}
            skipped: dict[str, str] = {}
            stages: RowStages | None = None
            timing: dict[str, Any] = merge_timing([])
            t0 = time.perf_counter()
            if todo and self.s.num_processes > 1:
                failures, skipped, timing = self._run_sharded(todo, store, pca)
            elif todo:
                stages = RowStages(self.entries, self.s, self.device)
                failures, skipped = stream_images(todo, stages, self.s, done=lambda e, i: (e, i) in store.done,
                                                  sink=store.append, pca=pca, progress=self.s.progress)
                timing = stages.timing()
            timing.update(stream_wall_s=time.perf_counter() - t0, num_processes=self.s.num_processes,
                          images_to_do=len(todo))
            report = ProfileReport(self.out, entries=self.entries, variant=self.s.variant,
                                   source=self._source_payload(), alpha=float(self.s.control("alpha")))
            ids = [r.image_id for r in self.records if r.image_id not in failures and r.image_id not in skipped]
            if not ids:
                report.write_lists(failures, skipped)
                raise ProfileError(
                    f"no image could be profiled: of {len(self.records)} images, {len(failures)} were unreadable "
                    f"(see {self.out / 'failed_images.txt'}) and {len(skipped)} too small or too elongated (see "
                    f"{self.out / 'skipped_images.txt'}; thresholds min_image_side={self.s.min_image_side}, "
                    f"max_aspect_ratio={self.s.max_aspect_ratio:g})")
            cost = self._cost_table(stages) if self.s.cost else None
            models = self._model_costs() if self.s.cost else None
            return report.write(store.records, image_ids=ids, failures=failures, skipped=skipped, timing=timing,
                                pca_entries=pca.entries([e.name for e in self.encoder_rows]), cost=cost,
                                model_cost=models)

    def _run_sharded(self, todo: Sequence[ImageRecord], store: ResultStore, pca: PCAMaps
                     ) -> tuple[dict[str, str], dict[str, str], dict[str, Any]]:
        """Stream ``todo`` in ``num_processes`` ranks (:mod:`.shards`), then merge their shards into ``store``."""
        # the training launcher (detectron2's launch), imported only for a sharded run
        from mgfusion.engine.distributed import launch_workers

        n = self.s.num_processes
        shards = split_batches(todo, self.s.batch_size, n)
        print(f"[profile] {len(todo)} images sharded across {n} processes ({self.device.type})")
        launch_workers(shard_worker, num_processes=n, dist_url=self.s.dist_url, device_type=self.device.type,
                       args=(self.s, shards, set(store.done), str(self.out.resolve()), pca.image_ids))
        store.merge_shards(self._order_key())
        metas = collect_meta(self.out)
        failures = {k: v for m in metas for k, v in m["failures"].items()}
        skipped = {k: v for m in metas for k, v in m["skipped"].items()}
        return failures, skipped, merge_timing([m["timing"] for m in metas])

    def _cost_table(self, stages: RowStages | None):
        """``recommendation -> cost rows`` over the encoder rows (built now if this process built none)."""
        encoders = {n: st.encoder for n, st in (stages.encoders if stages else {}).items() if st.kind == "encoder"}
        if not encoders:
            encoders = {e.name: build_entry_encoder(e, self.s, self.device) for e in self.encoder_rows}
        table = CostTable(cost_input_size(self.s.resolution, self.s.max_size), self.device, repeats=self.s.cost_repeats)
        return lambda rec: table.rows(encoders, rec)

    def _model_costs(self) -> list[dict[str, Any]]:
        """Full-model cost of each ``cost_models`` entry and of the runs of the checkpoint rows."""
        runs = list(self.s.cost_models)
        for e in self.encoder_rows:
            if e.source == "checkpoint" and e.part.run_dir not in runs:
                runs.append(e.part.run_dir)
        return model_costs(runs, tuple(self.s.cost_model_resolution)) if runs else []

    def _source_payload(self) -> dict[str, Any]:
        s = self.s
        return {"images": s.images, "dataset": s.dataset, "image_root": s.image_root, "max_images": s.max_images,
                "resolution": list(s.resolution) if isinstance(s.resolution, Sequence) else s.resolution,
                "max_size": s.max_size, "seed": s.seed, "metric_hparams": dict(s.metric_hparams),
                "controls": dict(s.controls), "plugins": self.plugins, "imports": list(s.imports)}


def run_profile(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """Run a profile from a (Hydra) mapping of :class:`ProfileSettings` fields; returns the summary payload."""
    return Profiler(ProfileSettings.from_mapping(cfg)).run()
