"""The run folder of ``tools/train_net.py``: its name, what a new launch may do in a folder that already holds a run.

Naming (Hydra resolvers, registered by :func:`register_resolvers` before ``@hydra.main`` composes the config):

* ``${mgf.run_name:${hydra.job.override_dirname}}`` — the folder name of a set of overrides: a readable prefix of
  the overrides string (at most :data:`MAX_NAME_CHARS` characters; ``=`` shown as ``-``, ``,`` as ``+``, other
  characters that are unsafe in file names or Hydra values, such as ``/``, as ``_``) plus ``-`` and the first 10 hex
  digits of the SHA-256 of the full string, e.g. ``solver.max_iter-10+seed-1-3fa9c1b2d4``. No overrides: ``default``.
  The name is a pure function of the string, so the same command (plus ``resume=true``, excluded from the string)
  finds its folder again; the full string is kept in ``<run>/overrides.txt``.
* ``${mgf.first_set:${output_dir},DEFAULT}`` — ``output_dir`` when given, else ``DEFAULT``; makes ``output_dir=``
  replace Hydra's run folder entirely (nothing is created under ``outputs/``).

Existing runs (checked by :func:`check_run_dir` before anything is written):

* a folder holding a training run (checkpoints, ``last_checkpoint``, ``metrics.json`` or ``final_metrics.json``)
  is refused unless ``resume=true`` (continue it) or ``overwrite=true`` (its files are moved, not deleted, into
  ``<run>/overwritten-<UTC time>/`` by :func:`move_previous_run`);
* ``resume=true`` compares the new config with the saved ``config.yaml`` and refuses any difference outside
  :data:`RESUME_MAY_DIFFER`, naming the keys.
"""

from __future__ import annotations

import glob
import hashlib
import os
import re
import shutil
import time
from collections.abc import Iterable, Mapping
from typing import Any

from omegaconf import OmegaConf

from mgfusion.utils.config_keys import NON_RESULT_KEYS

__all__ = [
    "MAX_NAME_CHARS",
    "OVERRIDES_FILE",
    "RESUME_MAY_DIFFER",
    "DRAWN_SEED_FILE",
    "EVAL_FILES",
    "RUN_FILES",
    "RunDirError",
    "check_run_dir",
    "config_differences",
    "first_set",
    "move_previous_run",
    "previous_run_files",
    "register_resolvers",
    "run_name",
]

#: longest run-folder name kept verbatim (file systems allow 255 bytes; Hydra's sweep adds a parent folder).
MAX_NAME_CHARS = 80
#: the full override string of a run, written into its folder.
OVERRIDES_FILE = "overrides.txt"
#: files and folders a training or evaluation run writes (what ``overwrite=true`` moves away).
#: the random seed of a ``seed: null`` run, drawn at its start and reused by ``resume=true``
DRAWN_SEED_FILE = "drawn_seed.txt"
RUN_FILES = ("model_*.pth", ".model_*.pth.*.tmp", "last_checkpoint", "config.yaml", "eval_config.yaml",
             "metrics.json", "final_metrics.json", "eval_metrics.json", "log.txt", "log.txt.rank*",
             "events.out.tfevents.*", "per_class_ap_*.md", "eval_per_class_ap_*.md", "inference", "eval_inference",
             DRAWN_SEED_FILE, OVERRIDES_FILE)
#: the files an ``eval_only`` launch writes (next to a training run's files, which it never touches).
EVAL_FILES = ("eval_config.yaml", "eval_metrics.json", "eval_per_class_ap_*.md", "eval_inference")
#: the files that mark a folder as holding a (possibly finished) training run.
_TRAINING_MARKERS = ("model_*.pth", "last_checkpoint", "metrics.json", "final_metrics.json")
#: config keys that may differ between a run and its resumption: they do not change what is trained. The process
#: layout may change because ``solver.ims_per_batch`` is the global batch and the sample stream is global (each rank
#: takes every world-size-th sample), so the same images are seen in the same order. ``device`` is not in the list:
#: it changes the mixed-precision policy (``solver.amp.dtype=auto``).
RESUME_MAY_DIFFER = NON_RESULT_KEYS

_UNSAFE = re.compile(r"[^A-Za-z0-9._+@-]")
_SEPARATORS = str.maketrans({"=": "-", ",": "+"})


class RunDirError(RuntimeError):
    """The run folder holds a run that this launch would overwrite, or one with another config (message: the fix)."""


def run_name(overrides: str | None, max_chars: int = MAX_NAME_CHARS) -> str:
    """Folder name for Hydra's ``override_dirname`` string (``k1=v1,k2=v2``): readable, bounded, distinct for
    distinct strings, and usable unquoted as a Hydra value (``weights=<run>/model_final.pth``).

    ``=`` becomes ``-``, ``,`` becomes ``+``, any other character outside ``[A-Za-z0-9._+@-]`` (``/``, brackets,
    quotes, spaces, ...) becomes ``_``; the result is cut to ``max_chars`` and followed by ``-`` and the first 10 hex
    digits of the SHA-256 of the full string. No overrides: ``default``.
    """
    text = str(overrides or "")
    if not text:
        return "default"
    readable = _UNSAFE.sub("_", text.translate(_SEPARATORS))[:max_chars].rstrip("+_")
    return f"{readable}-{hashlib.sha256(text.encode('utf-8')).hexdigest()[:10]}"


def first_set(value: Any, default: Any) -> Any:
    """``value`` unless it is None or empty, else ``default`` (resolver ``mgf.first_set``)."""
    return default if value is None or value == "" else value


def register_resolvers() -> None:
    """Register the ``mgf.run_name`` and ``mgf.first_set`` resolvers (idempotent); call before composing."""
    for name, fn in (("mgf.run_name", run_name), ("mgf.first_set", first_set)):
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn)


def previous_run_files(output_dir: str, patterns: Iterable[str] = RUN_FILES) -> list[str]:
    """Names of the entries of ``output_dir`` matching ``patterns`` (sorted)."""
    found: set[str] = set()
    for pattern in patterns:
        found.update(os.path.basename(p) for p in glob.glob(os.path.join(glob.escape(output_dir), pattern)))
    return sorted(found)


def _flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, Mapping):
        out: dict[str, Any] = {}
        for k, v in node.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out if out or not prefix else {prefix[:-1]: {}}
    return {prefix[:-1]: node}


def config_differences(saved: Mapping[str, Any], new: Mapping[str, Any],
                       may_differ: Iterable[str] = RESUME_MAY_DIFFER) -> list[str]:
    """``key: saved -> new`` for every leaf that differs (missing on one side counts), except ``may_differ`` keys
    and their children."""
    allowed = tuple(may_differ)
    a, b = _flatten(saved), _flatten(new)
    diffs = []
    for key in sorted(set(a) | set(b)):
        if any(key == k or key.startswith(k + ".") for k in allowed):
            continue
        old, cur = a.get(key, "<absent>"), b.get(key, "<absent>")
        if old != cur:
            diffs.append(f"{key}: {old!r} -> {cur!r}")
    return diffs


def check_run_dir(output_dir: str, config: Mapping[str, Any], *, resume: bool, overwrite: bool,
                  eval_only: bool) -> None:
    """Refuse a launch that would overwrite or continue a run it does not match (nothing is written).

    Args:
        output_dir: the run folder (may not exist yet).
        config: the new run's resolved config (plain containers).
        resume, overwrite, eval_only: the launch's flags.

    Raises:
        RunDirError: a training launch without ``resume``/``overwrite`` in a folder holding a training run, or
            ``resume`` with a config that differs from the saved ``config.yaml`` in keys outside
            :data:`RESUME_MAY_DIFFER`.
    """
    if not os.path.isdir(output_dir):
        return
    if eval_only:
        held = previous_run_files(output_dir, ("eval_metrics.json",))
        if held and not overwrite:
            raise RunDirError(
                f"output_dir {output_dir} already holds an evaluation (eval_metrics.json); evaluating again would "
                "overwrite it. Pass overwrite=true to evaluate there anyway (the previous evaluation's files are "
                f"moved, not deleted, into {os.path.join(output_dir, 'overwritten-<UTC time>')}/), or choose another "
                "output_dir. A training run's own files are never touched by eval_only."
            )
        return
    if resume and overwrite:
        raise RunDirError("resume=true and overwrite=true contradict each other: resume continues the run in "
                          f"{output_dir}, overwrite starts a new one there; pass one of them")
    held = previous_run_files(output_dir, _TRAINING_MARKERS)
    if held and not resume and not overwrite:
        raise RunDirError(
            f"output_dir {output_dir} already holds a training run ({', '.join(held[:6])}"
            f"{', ...' if len(held) > 6 else ''}); starting again would overwrite it. Pass resume=true to continue "
            "that run (same config), or overwrite=true to start a new run there (the old run's files are moved, "
            f"not deleted, into {os.path.join(output_dir, 'overwritten-<UTC time>')}/), or choose another output_dir."
        )
    saved_path = os.path.join(output_dir, "config.yaml")
    if resume and os.path.isfile(saved_path):
        saved = OmegaConf.to_container(OmegaConf.load(saved_path), resolve=False)
        diffs = config_differences(saved, config)
        if diffs:
            shown = "\n  ".join(diffs[:30]) + (f"\n  ... ({len(diffs) - 30} more)" if len(diffs) > 30 else "")
            raise RunDirError(
                f"resume=true: the config differs from the run's saved {saved_path} in {len(diffs)} key(s):\n  "
                f"{shown}\nA resumed run must be trained with the settings it started with. Restore these settings "
                "(the saved config.yaml lists them), or drop resume=true and pass overwrite=true to start a new run "
                f"in this folder, or choose another output_dir. Keys that may differ on resume: "
                f"{', '.join(sorted(RESUME_MAY_DIFFER))}."
            )


def move_previous_run(output_dir: str, patterns: Iterable[str] = RUN_FILES) -> str | None:
    """Move every entry of ``output_dir`` matching ``patterns`` (default :data:`RUN_FILES`; :data:`EVAL_FILES` for
    an ``eval_only`` overwrite) into ``output_dir/overwritten-<UTC time>/``; returns that folder (None when there was
    nothing to move). Nothing is deleted."""
    names = previous_run_files(output_dir, patterns)
    if not names:
        return None
    target = os.path.join(output_dir, "overwritten-" + time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()))
    suffix, base = 1, target
    while os.path.exists(target):
        suffix += 1
        target = f"{base}.{suffix}"
    os.makedirs(target)
    for name in names:
        shutil.move(os.path.join(output_dir, name), os.path.join(target, name))
    return target
