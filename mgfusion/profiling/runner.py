"""Run a profile: wire the stages of :mod:`mgfusion.profiling` together (the paper's RQ2, Tables 5/9/11).

``Profiler(settings).run()``:

1. imports ``settings.imports`` and installed ``mgfusion.plugins`` entry points (user encoders get registered);
2. checks every setting that needs the registries (encoder names, metric variant and hyper-parameters) and the
   weights of each encoder: a foundation encoder without weights is refused unless ``allow_random_init=true``
   (mgfusion's ``*micro*`` smoke-test architectures, which have no released weights, are exempt);
3. lists the images (:mod:`.sources`), builds the fingerprint (:mod:`.fingerprint`) and opens the run folder's
   :class:`~.store.ResultStore` (lock, fingerprint check, resume index) -- all before any image is decoded;
4. streams the unfinished images (:class:`~.loader.ImageStream`) through each encoder's
   :class:`~.features.FeatureMetrics`, appending records per batch and saving :class:`~.pca.PCAMaps`;
5. writes the report (:class:`~.outputs.ProfileReport`) with the cost table (:class:`~.cost.CostTable`).

A run in which no image could be profiled writes the lists of failed / skipped images and raises
:class:`ProfileError` (the tool exits non-zero).
"""

from __future__ import annotations

import datetime as _dt
import functools
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import timm
import torch
from tqdm import tqdm

import mgfusion
from mgfusion.backbones import get_encoder_factory, list_encoders
from mgfusion.metrics import list_variants, resolve_config
from mgfusion.utils.device import resolve_device
from mgfusion.utils.plugins import import_modules, load_entry_point_plugins

from .cost import CostTable, cost_input_size
from .features import FeatureMetrics, build_profiled_encoder
from .fingerprint import build_fingerprint, images_identity, weights_identity
from .loader import ImageStream
from .outputs import ProfileReport
from .pca import PCAMaps
from .settings import ProfileConfigError, ProfileSettings
from .sources import ImageRecord, resolve_source
from .store import ResultStore


class ProfileError(RuntimeError):
    """A profile that cannot produce any result (e.g. every image unreadable or skipped)."""


def _registered_by_mgfusion(name: str) -> bool:
    module = getattr(get_encoder_factory(name), "__module__", "") or ""
    return module == "mgfusion" or module.startswith("mgfusion.")


def needs_weights(name: str) -> bool:
    """True for encoders that mgfusion registers with released checkpoints (all but the ``*micro*`` ones).

    Encoders registered by a user's module or plugin are built as their factory builds them (the factory may load
    weights itself), so the random-init rule is not applied to them; their weights are recorded as given.
    """
    return _registered_by_mgfusion(name) and "micro" not in name


def check_registry_settings(s: ProfileSettings) -> None:
    """Encoder names, metric variant and metric hyper-parameters (these need the registries)."""
    unknown = [e for e in s.encoders if e not in list_encoders()]
    if unknown:
        raise ProfileConfigError(f"unknown encoder(s) {unknown}; registered encoders: {', '.join(list_encoders())}"
                                 ". A user encoder's module must be imported first: imports=[my_pkg.my_module]")
    if s.variant not in list_variants():
        raise ProfileConfigError(f"unknown metric variant {s.variant!r}; valid: {', '.join(list_variants())}")
    try:
        resolve_config(s.variant, dict(s.metric_hparams))
    except ValueError as e:
        raise ProfileConfigError(f"metric_hparams: {e}") from None


def describe_weights(name: str, s: ProfileSettings) -> dict[str, Any]:
    """``{"weights", "identity", "random_init", "description"}`` of encoder ``name``; applies the random-init rule."""
    value = s.encoder_weights(name)
    try:
        identity = weights_identity(value)
    except FileNotFoundError:
        raise ProfileConfigError(f"weights.{name}={value}: file not found (relative paths are relative to the "
                                 f"working directory {os.getcwd()})") from None
    if value is None:
        if not needs_weights(name) and not _registered_by_mgfusion(name):
            return {"weights": None, "identity": identity, "random_init": None,
                    "description": "no weights given: as built by its factory (a user or plugin encoder)"}
        if not needs_weights(name):
            why = f"random init, seed {s.seed} (smoke-test architecture without released weights)"
        elif s.allow_random_init:
            why = f"random init, seed {s.seed} (allow_random_init=true)"
        else:
            raise ProfileConfigError(
                f"{name} would be profiled with random initialisation: no weights are given for it, and a "
                f"random-init profile does not describe the pretrained encoder. Give weights.{name}=/path/to/"
                "checkpoint, or add allow_random_init=true to profile the random-init architecture on purpose "
                "(a control; the tables then say 'random init').")
        return {"weights": None, "identity": identity, "random_init": True, "description": why}
    if identity["kind"] == "hub":
        return {"weights": value, "identity": identity, "random_init": False, "description": f"timm {value}"}
    abs_path = str(Path(value).expanduser().resolve())
    mtime = _dt.datetime.fromtimestamp(identity["mtime_ns"] / 1e9).astimezone().isoformat(timespec="seconds")
    return {"weights": value, "path": abs_path, "identity": identity, "random_init": False,
            "description": f"{value} ({identity['size'] / 1e6:.1f} MB, modified {mtime}, head/tail sha256 "
                           f"{identity['head_tail_sha256'][:12]})"}


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
        check_registry_settings(settings)
        self.weights = {e: describe_weights(e, settings) for e in settings.encoders}
        self.device = resolve_device(settings.device)
        self.records: list[ImageRecord] = resolve_source(
            images=settings.images, dataset=settings.dataset, image_root=settings.image_root,
            max_images=settings.max_images)
        self.out = Path(settings.output_dir)

    def fingerprint(self) -> dict[str, Any]:
        """This run's fingerprint (contents: :mod:`mgfusion.profiling.fingerprint`)."""
        s = self.s
        metric_cfg = resolve_config(s.variant, dict(s.metric_hparams))
        encoders = {}
        for e in s.encoders:
            build = {k: v for k, v in (s.encoder_overrides.get(e) or {}).items() if k != "weights"}
            encoders[e] = {"build": build, "weights": self.weights[e]["identity"]}
        info = {"weights": {e: self.weights[e].get("path") or self.weights[e]["weights"] for e in s.encoders},
                "batch_size": s.batch_size, "device": str(self.device), "torch": torch.__version__,
                "timm": timm.__version__, "mgfusion": getattr(mgfusion, "__version__", None)}
        return build_fingerprint(
            metrics={"variant": s.variant, "config": asdict(metric_cfg), "seed": s.seed, "supervised": s.supervised},
            inputs={"resolution": s.resolution, "max_size": s.max_size, "amp": s.amp,
                    "projection_free": s.projection_free},
            encoders=encoders,
            images=images_identity(source_identity(s), [(r.image_id, _file_size(r.path)) for r in self.records]),
            info=info)

    # ---- main loop -------------------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        """Profile the unfinished images, then write the report; returns the ``summary.json`` payload."""
        with ResultStore(self.out, self.fingerprint(), fresh=self.s.fresh) as store:
            if store.superseded:
                print(f"[profile] fresh=true: earlier results moved to {store.superseded}")
            store.log_run({"argv": list(sys.argv), "pid": os.getpid(), "settings": asdict(self.s)})
            todo = [r for r in self.records if any((e, r.image_id) not in store.done for e in self.s.encoders)]
            skipped_done = len(self.records) - len(todo)
            if skipped_done:
                print(f"[profile] resuming in {self.out}: {skipped_done} finished images skipped, {len(todo)} to do")
            stages: dict[str, FeatureMetrics] = {}
            failures: dict[str, str] = {}
            skipped: dict[str, str] = {}
            pca = PCAMaps(self.out, [r.image_id for r in self.records[: self.s.num_pca_images]])
            if todo:
                stages = {e: FeatureMetrics(e, build_profiled_encoder(e, self.s, self.device), variant=self.s.variant,
                                            metric_hparams=self.s.metric_hparams, seed=self.s.seed, amp=self.s.amp,
                                            device=self.device) for e in self.s.encoders}
                self._stream(todo, stages, store, pca, failures, skipped)
            report = ProfileReport(self.out, encoders=self.s.encoders, variant=self.s.variant, weights=self.weights,
                                   source=self._source_payload())
            ids = [r.image_id for r in self.records if r.image_id not in failures and r.image_id not in skipped]
            if not ids:
                report.write_lists(failures, skipped)
                raise ProfileError(
                    f"no image could be profiled: of {len(self.records)} images, {len(failures)} were unreadable "
                    f"(see {self.out / 'failed_images.txt'}) and {len(skipped)} too small or too elongated (see "
                    f"{self.out / 'skipped_images.txt'}; thresholds min_image_side={self.s.min_image_side}, "
                    f"max_aspect_ratio={self.s.max_aspect_ratio:g})")
            cost = self._cost_table(stages) if self.s.cost else None
            return report.write(store.records(), image_ids=ids, failures=failures, skipped=skipped,
                                timing=self._timing(stages), pca_entries=pca.entries(self.s.encoders), cost=cost)

    def _stream(self, todo: Sequence[ImageRecord], stages: Mapping[str, FeatureMetrics], store: ResultStore,
                pca: PCAMaps, failures: dict[str, str], skipped: dict[str, str]) -> None:
        stream = ImageStream(todo, batch_size=self.s.batch_size, resolution=self.s.resolution,
                             max_size=self.s.max_size, num_workers=self.s.num_workers, load_labels=self.s.supervised,
                             min_side=self.s.min_image_side, max_aspect=self.s.max_aspect_ratio)
        bar = tqdm(total=len(stream), desc="profile", unit="img", disable=not self.s.progress, dynamic_ncols=True)
        for batch in stream:
            for image_id, err in batch["errors"]:
                failures[image_id] = err
                tqdm.write(f"[profile] skipped unreadable image: {err}")
            for image_id, why in batch["skipped"]:
                skipped[image_id] = why
                tqdm.write(f"[profile] skipped image: {why}")
            lines: list[dict[str, Any]] = []
            for name, stage in stages.items():
                keep = [i for i, iid in enumerate(batch["ids"]) if (name, iid) not in store.done]
                if keep:
                    encoded = stage(batch, keep)
                    pca.save(name, encoded)
                    lines += encoded.records
            store.append(lines)
            bar.update(len(batch["ids"]) + len(batch["errors"]) + len(batch["skipped"]))
            bar.set_postfix(failed=len(failures), skipped=len(skipped))
        bar.close()

    def _cost_table(self, stages: Mapping[str, FeatureMetrics]) -> Callable[[Mapping[str, Any] | None], list[dict]]:
        """``recommendation -> cost rows`` over the run's encoders (built now if every image was already done)."""
        encoders = {e: st.encoder for e, st in stages.items()} or {
            e: build_profiled_encoder(e, self.s, self.device) for e in self.s.encoders}
        table = CostTable(cost_input_size(self.s.resolution, self.s.max_size), self.device, repeats=self.s.cost_repeats)
        return functools.partial(table.rows, encoders)

    def _timing(self, stages: Mapping[str, FeatureMetrics]) -> dict[str, Any]:
        per = {e: dict(st.timing) for e, st in stages.items()}
        return {"encoder_s": sum(t["encoder_s"] for t in per.values()),
                "metrics_s": sum(t["metrics_s"] for t in per.values()),
                "images": max((t["images"] for t in per.values()), default=0), "per_encoder": per}

    def _source_payload(self) -> dict[str, Any]:
        s = self.s
        return {"images": s.images, "dataset": s.dataset, "image_root": s.image_root, "max_images": s.max_images,
                "resolution": list(s.resolution) if isinstance(s.resolution, Sequence) else s.resolution,
                "max_size": s.max_size, "seed": s.seed, "metric_hparams": dict(s.metric_hparams),
                "plugins": self.plugins, "imports": list(s.imports)}


def run_profile(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """Run a profile from a (Hydra) mapping of :class:`ProfileSettings` fields; returns the summary payload."""
    return Profiler(ProfileSettings.from_mapping(cfg)).run()
