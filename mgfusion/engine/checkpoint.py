"""Atomic, weights-only checkpoints on top of detectron2's ``DetectionCheckpointer``.

* **Atomic writes.** A checkpoint is written to a temporary file in the same folder, fsync'ed and ``os.replace``'d
  onto its name; the ``last_checkpoint`` pointer is then replaced the same way. A SIGKILL at any moment leaves either
  the old file or the new one, never a half-written one (at worst a stray ``.model_*.pth.*.tmp`` file, removed on
  the next resume).
* **Only tensors and plain Python types inside** (checked before writing), so every file loads with torch's
  ``weights_only=True``. numpy scalars/arrays are converted; anything else is rejected with the key path.
* **Clear errors.** A truncated or otherwise unreadable file raises :class:`CheckpointCorruptError` naming the file;
  a file holding arbitrary pickled objects raises :class:`CheckpointUnsafeError` (load it with ``trusted=True`` only
  if you trust its source).
* **Strict loading.** A checkpoint whose keys or shapes do not match the model raises
  :class:`IncompatibleCheckpointError` naming the missing, unexpected and shape-mismatched keys (a checkpoint of
  another backbone is never evaluated as a half-random model). ``strict=False`` is the explicit opt-out: the
  matching subset is loaded, a warning is logged and :attr:`AtomicCheckpointer.incompatible` says what was skipped.
* **Resume falls back.** :meth:`AtomicCheckpointer.resume_or_load` tries the newest checkpoint in the folder and, if
  it is corrupt, the older ones in turn, logging a warning for each skipped file; it raises only when none is
  readable.
"""

from __future__ import annotations

import collections
import glob
import logging
import os
import pickle
import re
import zipfile
from typing import Any

import numpy as np
import torch
from detectron2.checkpoint import DetectionCheckpointer
from torch import nn

from mgfusion.utils.io import atomic_open, atomic_write_text

__all__ = [
    "AtomicCheckpointer",
    "CheckpointCorruptError",
    "CheckpointError",
    "CheckpointUnsafeError",
    "IncompatibleCheckpointError",
    "read_checkpoint",
    "to_weights_only",
]

logger = logging.getLogger(__name__)

#: Leaf types that torch's ``weights_only=True`` unpickler accepts and that checkpoints may contain.
_PLAIN_LEAVES = (torch.Tensor, int, float, bool, str, bytes, type(None), torch.dtype, torch.device, torch.Size)


class CheckpointError(RuntimeError):
    """Base class of checkpoint errors that a user can act on (the message says how)."""


class CheckpointCorruptError(CheckpointError):
    """The checkpoint file is truncated or otherwise unreadable."""


class CheckpointUnsafeError(CheckpointError):
    """The checkpoint holds pickled objects other than tensors and plain Python types."""


class IncompatibleCheckpointError(CheckpointError):
    """The checkpoint's keys or shapes do not match the model (strict loading)."""


#: the fix printed with an :class:`IncompatibleCheckpointError` raised for the ``weights=`` of a run.
INCOMPATIBLE_HINT = (
    "Is it a checkpoint of another backbone or model config? Evaluate/continue it with the config it was trained "
    "with (config.yaml in its run folder). To initialise only an encoder from its own release file, use the "
    "encoder's weights key instead (backbone.weights=FILE; fusion: backbone.master.weights=FILE, "
    "backbone.auxiliary.weights=FILE). weights_strict=false loads the matching subset anyway (logged and recorded "
    "in the metrics JSON)."
)


def describe_incompatible(missing: list[str], unexpected: list[str], shapes: list[tuple]) -> str:
    """Indented lines listing (at most 20 of each) missing, unexpected and shape-mismatched keys."""

    def block(title: str, items: list[str]) -> str:
        if not items:
            return ""
        shown = ", ".join(items[:20]) + (f", ... ({len(items) - 20} more)" if len(items) > 20 else "")
        return f"\n  {title} ({len(items)}): {shown}"

    shape_items = [f"{k} (checkpoint {tuple(a)}, model {tuple(b)})" for k, a, b in shapes]
    return (block("missing keys", list(missing)) + block("unexpected keys", list(unexpected))
            + block("shape mismatches", shape_items))


def to_weights_only(obj: Any, path: str = "checkpoint") -> Any:
    """Return ``obj`` with numpy values turned into tensors / Python scalars; reject any other non-plain object.

    Containers (dict, OrderedDict, list, tuple) are rebuilt; leaves must be tensors or plain Python values.

    Raises:
        TypeError: naming the key path of the first object that ``torch.load(weights_only=True)`` would refuse.
    """
    if isinstance(obj, _PLAIN_LEAVES):
        return obj
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(obj))
    if isinstance(obj, collections.OrderedDict):
        out = collections.OrderedDict((k, to_weights_only(v, f"{path}[{k!r}]")) for k, v in obj.items())
        if hasattr(obj, "_metadata"):  # nn.Module.state_dict() metadata (versions): plain dicts of ints
            out._metadata = obj._metadata  # type: ignore[attr-defined]
        return out
    if isinstance(obj, dict):
        return {k: to_weights_only(v, f"{path}[{k!r}]") for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        items = [to_weights_only(v, f"{path}[{i}]") for i, v in enumerate(obj)]
        return items if isinstance(obj, list) else tuple(items)
    raise TypeError(
        f"{path} is a {type(obj).__module__}.{type(obj).__qualname__}; checkpoints may only contain tensors, "
        "numpy values and plain Python types (dict/list/tuple/int/float/bool/str/None) so that they load with "
        "torch.load(weights_only=True). Convert it in the owner's state_dict()."
    )


def read_checkpoint(path: str, *, trusted: bool = False) -> dict[str, Any]:
    """Load a checkpoint file onto the CPU with ``weights_only=True`` (or full unpickling when ``trusted``).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        CheckpointCorruptError: the file is truncated or not a torch checkpoint.
        CheckpointUnsafeError: the file is intact but holds arbitrary pickled objects and ``trusted`` is False.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    size = os.path.getsize(path)
    try:
        data = torch.load(path, map_location="cpu", weights_only=not trusted)
    except pickle.UnpicklingError as e:
        if "Weights only load failed" in str(e) and zipfile.is_zipfile(path):
            raise CheckpointUnsafeError(
                f"checkpoint {path} contains pickled objects other than tensors and plain Python types, so it "
                "cannot be loaded with weights_only=True. Load it with trusted=True only if you trust its source."
            ) from e
        raise _corrupt(path, size, e) from e
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile) as e:
        raise _corrupt(path, size, e) from e
    if not isinstance(data, dict):
        raise CheckpointCorruptError(f"checkpoint {path} holds a {type(data).__name__}, expected a dict")
    return data


def _corrupt(path: str, size: int, cause: BaseException) -> CheckpointCorruptError:
    reason = str(cause).splitlines()[0].split(". ")[0] if str(cause) else type(cause).__name__
    return CheckpointCorruptError(
        f"checkpoint {path} is truncated or corrupt ({size} bytes; torch.load: {reason}). "
        "Delete it, or resume from an earlier checkpoint in the same folder."
    )


def _iteration_of(filename: str, prefix: str) -> float:
    """Sort key of a checkpoint file: its iteration (``<prefix>_final`` counts as the newest)."""
    stem = os.path.splitext(os.path.basename(filename))[0]
    if stem == f"{prefix}_final":
        return float("inf")
    m = re.fullmatch(re.escape(prefix) + r"_(\d+)", stem)
    return float(m.group(1)) if m else -1.0


class AtomicCheckpointer(DetectionCheckpointer):
    """``DetectionCheckpointer`` with atomic saves, weights-only loads, clear errors and resume fallback.

    Args:
        model: the model (DDP wrappers are unwrapped by the base class).
        save_dir: folder of the checkpoints and the ``last_checkpoint`` pointer.
        save_to_disk: default: only the main process writes.
        file_prefix: name prefix of periodic checkpoints (``<prefix>_0004999.pth``, ``<prefix>_final.pth``).
        strict: refuse a checkpoint whose model keys/shapes differ from the model's (default); False loads the
            matching subset with a warning (see :attr:`incompatible`).
        strict_hint: sentence appended to the strict-loading error (how to fix it in the caller's terms).
        trusted: load with full unpickling (``weights_only=False``); only for files from a trusted source.
        **checkpointables: objects with ``state_dict()`` / ``load_state_dict()`` saved alongside the model.
    """

    def __init__(
        self,
        model: nn.Module,
        save_dir: str = "",
        *,
        save_to_disk: bool | None = None,
        file_prefix: str = "model",
        strict: bool = True,
        strict_hint: str = "",
        trusted: bool = False,
        **checkpointables: Any,
    ) -> None:
        super().__init__(model, save_dir, save_to_disk=save_to_disk, **checkpointables)
        self.file_prefix = file_prefix
        self.strict = strict
        self.strict_hint = strict_hint
        self.trusted = trusted
        #: keys skipped by the last non-strict load: {"missing": [...], "unexpected": [...], "shape_mismatch": [...]}
        self.incompatible: dict[str, list[str]] = {}
        self._loading: str = ""
        #: the checkpoint the last :meth:`resume_or_load` resumed from (None: it started fresh / loaded weights only)
        self.resumed_from: str | None = None

    # ---- saving ------------------------------------------------------------------------------------------------
    def save(self, name: str, **kwargs: Any) -> None:
        """Write ``<save_dir>/<name>.pth`` atomically, then point ``last_checkpoint`` at it."""
        if not self.save_dir or not self.save_to_disk:
            return
        data: dict[str, Any] = {"model": self.model.state_dict()}
        for key, obj in self.checkpointables.items():
            data[key] = obj.state_dict()
        data.update(kwargs)
        data = to_weights_only(data)
        basename = f"{name}.pth"
        save_file = os.path.join(self.save_dir, basename)
        self.logger.info("Saving checkpoint to %s", save_file)
        with atomic_open(save_file, "wb") as f:
            torch.save(data, f)
        self.tag_last_checkpoint(basename)

    def tag_last_checkpoint(self, last_filename_basename: str) -> None:
        """Atomically replace ``<save_dir>/last_checkpoint`` with ``last_filename_basename``."""
        atomic_write_text(os.path.join(self.save_dir, "last_checkpoint"), last_filename_basename)

    # ---- loading -----------------------------------------------------------------------------------------------
    def load(self, path: str, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """Load ``path`` (see :meth:`DetectionCheckpointer.load`); a missing local file raises FileNotFoundError."""
        if path and "://" not in path and not os.path.isfile(path.split("?", 1)[0]):
            raise FileNotFoundError(f"checkpoint {path} does not exist")
        self._loading, self.incompatible = path, {}
        try:
            return super().load(path, *args, **kwargs)
        finally:
            self._parsed_url_during_load = None  # the base class leaves it set when loading raises

    def _load_model(self, checkpoint: Any) -> Any:
        """detectron2's model loading, then the strict check (:class:`IncompatibleCheckpointError`)."""
        incompatible = super()._load_model(checkpoint)
        missing, unexpected = sorted(incompatible.missing_keys), sorted(incompatible.unexpected_keys)
        shapes = sorted(incompatible.incorrect_shapes)
        if not (missing or unexpected or shapes):
            return incompatible
        if self.strict:
            hint = f"\n{self.strict_hint}" if self.strict_hint else ""
            raise IncompatibleCheckpointError(f"checkpoint {self._loading} does not match the model (strict loading)"
                                              + describe_incompatible(missing, unexpected, shapes) + hint)
        self.incompatible = {"missing": missing, "unexpected": unexpected, "shape_mismatch": [k for k, *_ in shapes]}
        logger.warning(
            "NON-STRICT LOADING of %s: %d missing, %d unexpected and %d shape-mismatched keys were NOT loaded; "
            "those parameters keep their initialisation.%s", self._loading, len(missing), len(unexpected),
            len(shapes), describe_incompatible(missing, unexpected, shapes))
        return incompatible

    def _torch_load(self, f: str) -> dict[str, Any]:
        return read_checkpoint(f, trusted=self.trusted)

    def checkpoint_candidates(self) -> list[str]:
        """Checkpoints to resume from, best first: ``<prefix>_*.pth`` newest iteration first (``_final`` first of
        all); a ``last_checkpoint`` target with another name leads. A kill between writing a checkpoint and
        updating the pointer thus still resumes from the newest complete file."""
        pattern = os.path.join(glob.escape(self.save_dir), f"{glob.escape(self.file_prefix)}_*.pth")
        ordered = sorted(glob.glob(pattern), key=lambda p: _iteration_of(p, self.file_prefix), reverse=True)
        last = self.get_checkpoint_file() if self.has_checkpoint() else ""
        if last and os.path.isfile(last) and last not in ordered:
            ordered.insert(0, last)
        return ordered

    def resume_or_load(self, path: str | None, *, resume: bool = True) -> dict[str, Any]:
        """Resume from the newest readable checkpoint in ``save_dir`` (``resume``), else load only the model.

        With ``resume`` and at least one checkpoint in the folder, corrupt files are skipped with a warning (the
        next older one is tried); :class:`CheckpointCorruptError` is raised when none can be read; they are always
        loaded strictly. Without checkpoints (or ``resume=False``), ``path`` (may be empty) initializes the model
        only, strictly unless :attr:`strict` is False.
        """
        self.resumed_from = None
        candidates = self.checkpoint_candidates() if resume else []
        if not candidates:
            return self.load(path or "", checkpointables=[])
        self._remove_stale_temp_files()
        errors = []
        strict, self.strict = self.strict, True  # the run's own checkpoints always match its model
        try:
            for candidate in candidates:
                try:
                    ret = self.load(candidate)
                except CheckpointCorruptError as e:
                    errors.append(str(e))
                    logger.warning("%s Trying the previous checkpoint.", e)
                else:
                    self.resumed_from = candidate
                    return ret
        finally:
            self.strict = strict
        raise CheckpointCorruptError(
            f"no readable checkpoint in {self.save_dir} to resume from:\n  " + "\n  ".join(errors)
        )

    def _remove_stale_temp_files(self) -> None:
        """Delete temporary files left by a save that was killed before its ``os.replace`` (main process only)."""
        if not self.save_to_disk:
            return
        pattern = os.path.join(glob.escape(self.save_dir), f".{glob.escape(self.file_prefix)}_*.pth.*.tmp")
        for stale in glob.glob(pattern):
            logger.info("Removing %s (left by an interrupted save)", stale)
            os.unlink(stale)
