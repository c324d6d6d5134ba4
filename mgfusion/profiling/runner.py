"""Profile encoders with the label-free SC/EF metrics over an image set (the paper's RQ2, Tables 5/9/11).

Images stream in batches; each batch goes through every encoder once (frozen, no autograd) and the metrics of all
four strides are computed per image and appended to ``per_image.jsonl``. A rerun with the same output folder skips
finished (encoder, image) pairs. At the end the run folder gets the aggregate tables, plots, a recommended fusion
config, the supervised SC_gt / Spearman report when labels exist, and a cost table.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from tqdm import tqdm

from mgfusion.backbones import Encoder, FusionBackbone, build_encoder, list_encoders
from mgfusion.metrics import compute_pyramid_metrics, list_variants, pca_map, sc_gt, spearman
from mgfusion.utils.device import resolve_device
from mgfusion.utils.io import atomic_write_text

from . import report
from .cost import cost_row
from .loader import make_loader
from .recommend import recommend_pair, write_fusion_config
from .sources import ImageRecord, resolve_source
from .store import ResultStore

logger = logging.getLogger(__name__)


@dataclass
class ProfileSettings:
    """Everything a profiling run needs (mirrors ``configs/tools/profile_encoders.yaml``)."""

    encoders: Sequence[str]
    output_dir: str
    images: str | None = None
    image_root: str | None = None
    dataset: str | None = None
    max_images: int | None = None
    resolution: int | Sequence[int] | None = 512
    max_size: int | None = 1024
    batch_size: int = 4
    num_workers: int = 2
    device: str = "auto"
    amp: bool = False
    variant: str = "reference"
    seed: int = 0
    metric_hparams: Mapping[str, Any] = field(default_factory=dict)
    weights: Mapping[str, str | None] = field(default_factory=dict)
    encoder_overrides: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    projection_free: bool = False
    num_pca_images: int = 4
    supervised: bool = True
    cost: bool = True
    cost_repeats: int = 3
    progress: bool = True

    @classmethod
    def from_mapping(cls, cfg: Mapping[str, Any]) -> "ProfileSettings":
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(cfg) - known - {"hydra"}
        if unknown:
            raise ValueError(f"unknown profile settings {sorted(unknown)}; valid: {', '.join(sorted(known))}")
        return cls(**{k: v for k, v in cfg.items() if k in known})


def validate(settings: ProfileSettings) -> None:
    """Fail fast, before loading anything heavy: unknown encoders / variant, empty encoder list."""
    if not settings.encoders:
        raise ValueError("encoders=[...] is empty; give at least one registered encoder")
    unknown = [e for e in settings.encoders if e not in list_encoders()]
    if unknown:
        raise ValueError(f"unknown encoder(s) {unknown}; registered encoders: {', '.join(list_encoders())}")
    if len(set(settings.encoders)) != len(settings.encoders):
        raise ValueError(f"encoders contain duplicates: {list(settings.encoders)}")
    if settings.variant not in list_variants():
        raise ValueError(f"unknown metric variant {settings.variant!r}; valid: {', '.join(list_variants())}")


def build_profiled_encoder(name: str, settings: ProfileSettings, device: torch.device) -> Encoder:
    """Build a frozen encoder for profiling (weights and overrides from the settings)."""
    kwargs: dict[str, Any] = dict(settings.encoder_overrides.get(name, {}))
    if settings.weights.get(name):
        kwargs["weights"] = settings.weights[name]
    if settings.projection_free and name.startswith(("dinov", "samvit")):
        kwargs.setdefault("neck", "raw")
    torch.manual_seed(settings.seed)  # random-init necks/encoders are reproducible across runs and resumes
    return build_encoder(name, freeze=True, **kwargs).to(device)


def normalize(images: torch.Tensor, valid_hw: torch.Tensor, encoder: Encoder) -> torch.Tensor:
    """(B,3,H,W) uint8 RGB -> normalized float with the encoder's stats; padding set to 0 (as detectron2 pads)."""
    mean = torch.tensor(encoder.pixel_mean, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(encoder.pixel_std, device=images.device).view(1, 3, 1, 1)
    x = (images.float() - mean) / std
    h, w = x.shape[-2:]
    rows = torch.arange(h, device=x.device).view(1, h, 1) < valid_hw[:, 0].view(-1, 1, 1)
    cols = torch.arange(w, device=x.device).view(1, 1, w) < valid_hw[:, 1].view(-1, 1, 1)
    return x * (rows & cols).unsqueeze(1)


class Profiler:
    """Runs a profile as described by :class:`ProfileSettings` (see module docstring)."""

    def __init__(self, settings: ProfileSettings) -> None:
        validate(settings)
        self.s = settings
        self.out = Path(settings.output_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        self.device = resolve_device(settings.device)
        self.records: list[ImageRecord] = resolve_source(
            images=settings.images, dataset=settings.dataset, image_root=settings.image_root,
            max_images=settings.max_images)
        self.store = ResultStore(self.out / "per_image.jsonl")
        self.failures: dict[str, str] = {}
        self.timing = {"encoder_s": 0.0, "metrics_s": 0.0, "images": 0}
        self.pca_ids = [r.image_id for r in self.records[: settings.num_pca_images]]

    # ---- main loop -------------------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        todo = [r for r in self.records
                if any((e, r.image_id) not in self.store.done for e in self.s.encoders)]
        skipped = len(self.records) - len(todo)
        if skipped:
            print(f"[profile] resuming in {self.out}: {skipped} finished images skipped, {len(todo)} to do")
        encoders = {e: build_profiled_encoder(e, self.s, self.device) for e in self.s.encoders} if todo else {}
        if todo:
            self._stream(todo, encoders)
        return self.finalize(encoders)

    def _stream(self, todo: Sequence[ImageRecord], encoders: Mapping[str, Encoder]) -> None:
        loader = make_loader(todo, batch_size=self.s.batch_size, resolution=self.s.resolution,
                             max_size=self.s.max_size, num_workers=self.s.num_workers,
                             load_labels=self.s.supervised)
        bar = tqdm(total=len(todo), desc="profile", unit="img", disable=not self.s.progress, dynamic_ncols=True)
        for batch in loader:
            for image_id, err in batch["errors"]:
                self.failures[image_id] = err
                tqdm.write(f"[profile] skipped unreadable image: {err}")
            if batch["ids"]:
                lines = []
                for name, enc in encoders.items():
                    lines += self._profile_batch(name, enc, batch)
                self.store.append(lines)
                self.timing["images"] += len(batch["ids"])
            bar.update(len(batch["ids"]) + len(batch["errors"]))
            bar.set_postfix(failed=len(self.failures))
        bar.close()

    def _profile_batch(self, name: str, enc: Encoder, batch: Mapping[str, Any]) -> list[dict[str, Any]]:
        keep = [i for i, iid in enumerate(batch["ids"]) if (name, iid) not in self.store.done]
        if not keep:
            return []
        idx = torch.tensor(keep)
        images = batch["images"][idx].to(self.device)
        valid = batch["valid_hw"][idx].to(self.device)
        ids = [batch["ids"][i] for i in keep]
        t0 = time.perf_counter()
        with torch.inference_mode(), torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.s.amp):
            feats = enc(normalize(images, valid, enc))
        feats = {s: f.float() for s, f in feats.items()}
        self._sync()
        t1 = time.perf_counter()
        metrics = compute_pyramid_metrics(feats, images, variant=self.s.variant, valid_hw=valid, seed=self.s.seed,
                                          **dict(self.s.metric_hparams))
        supervised = self._supervised(feats, batch, idx, valid) if batch.get("sem") is not None else {}
        self._sync()
        self.timing["encoder_s"] += t1 - t0
        self.timing["metrics_s"] += time.perf_counter() - t1
        self._save_pca(name, ids, images, valid, feats)
        out = []
        for b, iid in enumerate(ids):
            per_stride = {}
            for s, m in metrics.items():
                row = {k: _finite(v[b]) for k, v in m.items()}
                if s in supervised:
                    row["SC_gt"] = _finite(supervised[s][b])
                per_stride[str(s)] = row
            h, w = (int(v) for v in valid[b])
            out.append({"encoder": name, "image_id": iid, "variant": self.s.variant, "size": [h, w],
                        "metrics": per_stride})
        return out

    def _supervised(self, feats, batch, idx, valid) -> dict[int, torch.Tensor]:
        """SC_gt per stride from the batch's label maps (void = -1)."""
        sem = batch["sem"][idx].to(self.device)
        inst = batch["inst"][idx].to(self.device)
        return {s: sc_gt(f, stride=s, semantic=sem, instance=inst, ignore_label=-1, valid_hw=valid,
                         seed=self.s.seed)["SC_gt"] for s, f in feats.items()}

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def _save_pca(self, name, ids, images, valid, feats) -> None:
        for b, iid in enumerate(ids):
            if iid not in self.pca_ids:
                continue
            h, w = (int(v) for v in valid[b])
            maps = {}
            for s, f in feats.items():
                fh, fw = -(-h // s), -(-w // s)
                maps[str(s)] = pca_map(f[b: b + 1, :, :fh, :fw])[0].cpu().numpy().astype(np.float16)
            path = self.out / "pca" / name / f"{_safe(iid)}.npz"
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name("." + path.name + ".tmp.npz")
            np.savez_compressed(tmp, image=images[b, :, :h, :w].permute(1, 2, 0).cpu().numpy(), **maps)
            os.replace(tmp, path)

    # ---- reports ---------------------------------------------------------------------------------------------
    def finalize(self, encoders: Mapping[str, Encoder]) -> dict[str, Any]:
        ids = [r.image_id for r in self.records if r.image_id not in self.failures]
        summary = report.summarize(self.store.records(), encoders=self.s.encoders, image_ids=ids,
                                   variant=self.s.variant)
        files = report.write_tables(self.out, summary)
        report.plot_sc_ef(summary, self.out / "plots" / "sc_ef_vs_stride.png",
                          title=f"{len(ids)} images, variant={self.s.variant}")
        report.plot_pca_maps(self._pca_entries(), self.out / "plots" / "pca_maps.png")
        payload: dict[str, Any] = {
            "variant": self.s.variant,
            "num_images": len(ids),
            "failed_images": len(self.failures),
            "encoders": {e: {str(s): m for s, m in d.items()} for e, d in summary.items()},
            "timing": self.timing,
            "source": {"images": self.s.images, "dataset": self.s.dataset, "max_images": self.s.max_images,
                       "resolution": _plain(self.s.resolution)},
        }
        if len(summary) >= 2:
            rec = recommend_pair(summary)
            payload["recommendation"] = rec.to_dict()
            write_fusion_config(self.out / "recommended_fusion.yaml", rec, weights=dict(self.s.weights))
        rq4 = self._rq4(summary)
        if rq4:
            payload["supervised"] = rq4
            atomic_write_text(self.out / "supervised_rq4.md", _rq4_markdown(rq4))
        if self.s.cost:
            payload["cost"] = self._cost(encoders, payload.get("recommendation"))
            atomic_write_text(self.out / "cost.md", _markdown_rows(payload["cost"]))
        if self.failures:
            atomic_write_text(self.out / "failed_images.txt",
                              "".join(f"{k}\t{v}\n" for k, v in sorted(self.failures.items())))
        atomic_write_text(self.out / "summary.json", json.dumps(payload, indent=2, default=_plain) + "\n")
        print(f"[profile] {len(ids)} images profiled, {len(self.failures)} unreadable skipped; results in {self.out}")
        print(report.table5_markdown(summary, spread=False))
        if "recommendation" in payload:
            r = payload["recommendation"]
            print(f"[profile] recommendation: master={r['master']} auxiliary={r['auxiliary']} stride={r['stride']} "
                  f"-> {self.out / 'recommended_fusion.yaml'}")
        payload["files"] = {k: str(v) for k, v in files.items()}
        return payload

    def _pca_entries(self) -> list[dict[str, Any]]:
        entries = []
        for iid in self.pca_ids:
            for name in self.s.encoders:
                path = self.out / "pca" / name / f"{_safe(iid)}.npz"
                if path.exists():
                    with np.load(path) as z:
                        entries.append({"image_id": iid, "encoder": name, "image": z["image"],
                                        "maps": {int(k): z[k].astype(np.float32) for k in z.files if k != "image"}})
        return entries

    def _rq4(self, summary) -> dict[str, Any] | None:
        """SC vs SC_gt (SPEC §7, our reconstruction): means per encoder and stride, Spearman across encoders."""
        pairs = {e: {s: (m["SC"]["mean"], m["SC_gt"]["mean"]) for s, m in d.items() if "SC_gt" in m}
                 for e, d in summary.items()}
        pairs = {e: v for e, v in pairs.items() if v}
        if not pairs:
            return None
        per_encoder = {e: (float(np.mean([a for a, _ in v.values()])), float(np.mean([b for _, b in v.values()])))
                       for e, v in pairs.items()}
        out: dict[str, Any] = {"per_encoder": {e: {"SC": a, "SC_gt": b} for e, (a, b) in per_encoder.items()},
                               "note": "SC_gt is mgfusion's reconstruction of the paper's supervised counterpart "
                                       "(SPEC §7), not the authors' code."}
        out["spearman_encoders"] = _spearman(list(per_encoder.values()))
        out["spearman_encoder_stride"] = _spearman([ab for v in pairs.values() for ab in v.values()])
        return out

    def _cost(self, encoders: Mapping[str, Encoder], rec: Mapping[str, Any] | None) -> list[dict[str, Any]]:
        h, w = _cost_input_size(self.s.resolution, self.s.max_size)
        x = torch.randn(1, 3, h, w, device=self.device)
        encs = dict(encoders) or {e: build_profiled_encoder(e, self.s, self.device) for e in self.s.encoders}
        rows = [cost_row(name, enc, x, repeats=self.s.cost_repeats) for name, enc in encs.items()]
        if rec:
            fused = FusionBackbone(master=encs[rec["master"]], auxiliary=encs[rec["auxiliary"]],
                                   inject={int(rec["stride"]): "replace"})
            rows.append(cost_row(f"fused {rec['master']} + {rec['auxiliary']} @OS{rec['stride']}", fused, x,
                                 repeats=self.s.cost_repeats))
        return rows


def _spearman(pairs: Sequence[tuple[float, float]]) -> dict[str, Any]:
    """Spearman's rho of (metric, label score) pairs, or the reason it is undefined (n < 3, constant values)."""
    try:
        rho, p = spearman([a for a, _ in pairs], [b for _, b in pairs])
    except ValueError as e:
        return {"rho": None, "p": None, "n": len(pairs), "undefined": str(e)}
    return {"rho": rho, "p": p, "n": len(pairs)}


def _cost_input_size(resolution, max_size) -> tuple[int, int]:
    if resolution is not None and not isinstance(resolution, int):
        return int(resolution[0]), int(resolution[1])
    side = int(resolution or max_size or 512)
    return side, side


def _finite(v: torch.Tensor) -> float | None:
    v = float(v)
    return v if np.isfinite(v) else None


def _safe(image_id: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in image_id)


def _plain(v: Any) -> Any:
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, (np.floating, np.integer)):
        return v.item()
    if isinstance(v, torch.Tensor):
        return v.tolist()
    return v


def _markdown_rows(rows: Sequence[Mapping[str, Any]]) -> str:
    from mgfusion.utils.bench import format_table

    return format_table([{k: ("–" if v is None else v) for k, v in r.items()} for r in rows]) + "\n"


def _rq4_markdown(rq4: Mapping[str, Any]) -> str:
    lines = ["| Encoder | SC | SC_gt |", "|---|---|---|"]
    for e, v in rq4["per_encoder"].items():
        lines.append(f"| {e} | {v['SC']:.3f} | {v['SC_gt']:.3f} |")
    for key in ("spearman_encoders", "spearman_encoder_stride"):
        r = rq4[key]
        if r["rho"] is None:
            lines.append(f"\n{key}: undefined for n = {r['n']} ({r['undefined']})")
        else:
            lines.append(f"\n{key}: rho = {r['rho']:.3f}, p = {r['p']:.3g}, n = {r['n']}")
    lines.append(f"\n{rq4['note']}")
    return "\n".join(lines) + "\n"


def run_profile(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """Run a profile from a (Hydra) mapping of :class:`ProfileSettings` fields; returns the summary payload."""
    return Profiler(ProfileSettings.from_mapping(cfg)).run()
