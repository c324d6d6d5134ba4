"""The fingerprint of a profile: everything that changes a per-image result, stored in the run folder.

A resumed run reuses stored per-image records only when its fingerprint equals the stored one; otherwise it stops
with :class:`FingerprintMismatchError` naming every differing key. ``fingerprint.json`` holds two sections:

``compared`` (must match to resume)
    * ``version``: the record format of ``per_image.jsonl`` (2: records carry ``kind`` and, with labels, EF_gt);
    * ``metrics``: the variant and the full resolved metric configuration (variant defaults + ``metric_hparams``),
      the seed of the metric subsamples / k-means, ``supervised`` (whether SC_gt is computed);
    * ``input``: ``resolution``, ``max_size``, ``amp`` (bf16 forward), ``projection_free``;
    * ``encoders.<row>``: one entry per row of the tables (:mod:`~mgfusion.profiling.entries`): encoders and
      controls. ``build`` = the build overrides (``encoder_overrides.<name>`` without ``weights``), for an
      encoder taken out of a training checkpoint the part and the run config's encoder node, for a control its
      definition (noise rule and channels, pixel pooling rule); ``weights`` = the weights identity: for a file its
      size, modification time (ns) and a SHA-256 of its first and last MiB (reading a multi-GB checkpoint whole
      would cost minutes per run; size + mtime + head/tail catch a replaced, re-saved or truncated file), plus the
      entry prefix for a training checkpoint (``kind: checkpoint``); ``hub[:tag]`` by name; or ``none`` = random
      initialisation with the run's seed. The file path itself is not compared (a moved checkpoint gives the same
      numbers); it is kept under ``info``;
    * ``images``: the source (folder / COCO JSON path, or detectron2 dataset name), the number of images and a
      SHA-256 over the ordered ``(image id, file size)`` list.

``info`` (recorded, not compared): weight paths, batch size, device, library versions, host.

Not part of the fingerprint, because they do not change a stored per-image record: ``batch_size`` with
``resolution=[H,W]`` (no padding), ``num_workers``, ``num_processes`` (a sharded run forms the same batches),
``device``, ``cost*``, ``num_pca_images``, ``progress``, ``controls.alpha`` (used by the report only),
``min_image_side`` / ``max_aspect_ratio`` (skipped images are never stored). With ``resolution`` as a short side or
``null`` the images of a batch are zero-padded to a common size, so a ViT's features near the padding depend on the
batch's composition (as in detectron2's batched inference); use ``batch_size=1`` for batch-independent numbers.

Rows are compared one by one: adding an encoder or a control to a finished run is allowed (its records are computed
and its entry added); changing a stored row's build or weights is a mismatch.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

FINGERPRINT_VERSION = 2
HEAD_TAIL_BYTES = 1 << 20


class FingerprintMismatchError(RuntimeError):
    """Stored results were computed under other settings; the message names the differing keys and the fix."""


def head_tail_sha256(path: str | os.PathLike, chunk: int = HEAD_TAIL_BYTES) -> str:
    """SHA-256 of the file size, the first ``chunk`` bytes and the last ``chunk`` bytes of ``path``."""
    size = os.path.getsize(path)
    h = hashlib.sha256(str(size).encode())
    with open(path, "rb") as f:
        h.update(f.read(chunk))
        if size > chunk:
            f.seek(max(chunk, size - chunk))
            h.update(f.read(chunk))
    return h.hexdigest()


def weights_identity(value: str | None) -> dict[str, Any]:
    """Identity of an encoder's ``weights`` setting (see the module docstring); a missing file is an error."""
    if not value:
        return {"kind": "none"}
    if value == "hub" or value.startswith("hub:"):
        return {"kind": "hub", "name": value}
    path = Path(value).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {value} (check the weights.NAME=FILE setting)")
    st = path.stat()
    return {"kind": "file", "size": st.st_size, "mtime_ns": st.st_mtime_ns, "head_tail_sha256": head_tail_sha256(path)}


def images_identity(source: Mapping[str, Any], ids_and_sizes: Sequence[tuple[str, int | None]]) -> dict[str, Any]:
    """Identity of the selected images: the source, their count and a hash of the ordered (id, file size) list."""
    h = hashlib.sha256()
    for image_id, size in ids_and_sizes:
        h.update(f"{image_id}\t{size}\n".encode())
    return {"source": dict(source), "count": len(ids_and_sizes), "sha256": h.hexdigest()}


def _plain(v: Any) -> Any:
    if is_dataclass(v) and not isinstance(v, type):
        v = asdict(v)
    if isinstance(v, Mapping):
        return {str(k): _plain(x) for k, x in sorted(v.items(), key=lambda kv: str(kv[0]))}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    return v


def build_fingerprint(*, metrics: Mapping[str, Any], inputs: Mapping[str, Any], encoders: Mapping[str, Any],
                      images: Mapping[str, Any], info: Mapping[str, Any]) -> dict[str, Any]:
    """``{"compared": {...}, "info": {...}}`` with JSON-ready values (see the module docstring for the contents)."""
    compared = {"version": FINGERPRINT_VERSION, "metrics": metrics, "input": inputs, "encoders": encoders,
                "images": images}
    return {"compared": _plain(compared), "info": _plain(info)}


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(d, Mapping) and d:
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: d}


def differing_keys(stored: Mapping[str, Any], current: Mapping[str, Any]) -> list[tuple[str, Any, Any]]:
    """``[(dotted key, stored value, current value)]`` of the compared sections; encoders only if in both."""
    common = set(stored.get("encoders", {})) & set(current.get("encoders", {}))

    def keep(key: str) -> bool:
        parts = key.split(".")
        return parts[0] != "encoders" or len(parts) < 2 or parts[1] in common

    a = {k: v for k, v in _flatten(stored).items() if keep(k)}
    b = {k: v for k, v in _flatten(current).items() if keep(k)}
    missing = object()
    return [(k, a.get(k, missing), b.get(k, missing)) for k in sorted(set(a) | set(b))
            if a.get(k, missing) != b.get(k, missing)]


def _short(v: Any) -> str:
    s = "(absent)" if not isinstance(v, (str, int, float, bool, list, dict, type(None))) else repr(v)
    return s if len(s) <= 70 else s[:67] + "..."


def check_compatible(stored: Mapping[str, Any], current: Mapping[str, Any], *, where: str) -> None:
    """Raise :class:`FingerprintMismatchError` if the ``compared`` sections differ (shared encoders only)."""
    diffs = differing_keys(stored.get("compared", {}), current.get("compared", {}))
    if not diffs:
        return
    lines = "\n".join(f"  {k}: stored {_short(a)}, now {_short(b)}" for k, a, b in diffs)
    keys = sorted({k.split(".")[0] if not k.startswith("encoders.") else ".".join(k.split(".")[:2])
                   for k, _, _ in diffs})
    raise FingerprintMismatchError(
        f"{where} holds profiling results computed under other settings (differing: {', '.join(keys)}):\n{lines}\n"
        "Nothing was written. To keep both, give a new output_dir=...; to start this folder fresh, add fresh=true "
        "(the old results are moved to its superseded/ subfolder, not deleted).")


def merged(stored: Mapping[str, Any], current: Mapping[str, Any]) -> dict[str, Any]:
    """The stored fingerprint with the current run's new encoders and info added (after :func:`check_compatible`)."""
    def union(a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, Any]:
        return dict(sorted({**dict(a or {}), **dict(b or {})}.items()))

    compared = dict(current["compared"])
    compared["encoders"] = union(stored.get("compared", {}).get("encoders", {}), compared.get("encoders", {}))
    info = {**dict(stored.get("info", {})), **dict(current.get("info", {}))}
    info["weights"] = union(stored.get("info", {}).get("weights", {}), current.get("info", {}).get("weights", {}))
    return {"compared": compared, "info": info}
