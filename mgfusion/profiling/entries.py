"""What a profile measures: one :class:`ProfileEntry` per table row (encoders, then controls).

Encoder entries come from the ``encoders`` list: a registered name (its ``weights.NAME`` / random-init rule), or
``PART@PATH`` for an encoder taken out of a training checkpoint (:mod:`.finetuned`), followed, with
``initial_weights=true``, by the same encoder at the weights its run started from (``<name>:initial``).

Control entries (``controls.*``; docs/metrics.md, "Controls") are computed on the same images, strides and grids:

* ``control:noise``: i.i.d. standard-normal features, seeded per (image, stride); the channel count per stride is
  ``controls.noise_channels`` (``auto``: that of the first encoder entry). The chance level of every metric.
* ``control:pixels``: the image's own RGB values average-pooled to each stride's grid (3 channels). A trivial,
  perfectly edge-aligned baseline.
* ``control:random_init[<entry>]`` (``controls.random_init=true``): the entry's architecture with random
  initialisation (seeded with ``seed``); not added for entries that are random-init already.

Every entry carries its fingerprint identity (``identity``), so results are reused only under the same build,
weights (file identity) and control definition.
"""

from __future__ import annotations

import datetime as _dt
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mgfusion.backbones import (
    Encoder,
    build_encoder,
    get_encoder_factory,
    list_encoders,
)
from mgfusion.backbones.registry import RANDOM_INIT, requires_weights

from .finetuned import (
    CheckpointPart,
    build_part_encoder,
    checkpoint_iteration,
    finetuned_encoder,
    initial_encoder,
    initial_source,
    resolve_checkpoint_part,
)
from .fingerprint import weights_identity
from .settings import ProfileConfigError, ProfileSettings, split_checkpoint_entry

NOISE = "control:noise"
PIXELS = "control:pixels"
RANDOM_INIT_PREFIX = "control:random_init"
#: how noise features are drawn (part of the fingerprint: a change here must not reuse stored noise rows)
NOISE_RULE = "standard normal, torch.Generator(cpu) seeded with sha256(seed, image id, stride)"
PIXELS_RULE = "RGB / 255, average-pooled over stride x stride blocks (partial blocks: their pixels only)"


def random_init_name(entry: str) -> str:
    """The name of the random-init control of encoder entry ``entry``."""
    return f"{RANDOM_INIT_PREFIX}[{entry}]"


@dataclass
class ProfileEntry:
    """One row of the profile (an encoder or a control).

    Attributes:
        name: the row's name, also the ``encoder`` field of its per-image records.
        kind: ``encoder`` or ``control``.
        source: ``registry`` | ``checkpoint`` | ``initial`` (encoders); ``noise`` | ``pixels`` | ``random_init``.
        description: what the row is and which weights it has (printed under the tables).
        identity: the entry's fingerprint section (compared on resume).
        path: the weights / checkpoint file, recorded in the fingerprint's ``info`` (not compared).
        weights: the ``weights`` value of a registered encoder (for recommended_fusion.yaml).
        random_init: True when the row's weights are a random draw.
        registry_name: the encoder architecture's registry name (None for noise / pixels).
        part: the checkpoint part of ``checkpoint`` / ``initial`` rows (and their random-init controls).
        of: the encoder row an ``initial`` row or a random-init control belongs to.
    """

    name: str
    kind: str
    source: str
    description: str
    identity: dict[str, Any]
    path: str | None = None
    weights: str | None = None
    random_init: bool | None = None
    registry_name: str | None = None
    part: CheckpointPart | None = None
    of: str | None = None

    @property
    def uses_encoder(self) -> bool:
        """True when the row's features come from an encoder forward pass."""
        return self.source not in ("noise", "pixels")

    def summary(self) -> dict[str, Any]:
        """JSON-ready description (``summary.json["weights"]`` / ``["controls_info"]``)."""
        out = {"weights": self.weights, "identity": self.identity["weights"], "random_init": self.random_init,
               "description": self.description, "source": self.source}
        if self.path:
            out["path"] = self.path
        if self.of:
            out["of"] = self.of
        return out


# ---- registered encoders -----------------------------------------------------------------------------------------
def _registered_by_mgfusion(name: str) -> bool:
    module = getattr(get_encoder_factory(name), "__module__", "") or ""
    return module == "mgfusion" or module.startswith("mgfusion.")


def needs_weights(name: str) -> bool:
    """True for encoders registered as foundation models with released weights (``register_encoder(...,
    requires_weights=True)``: every zoo encoder but the ``*micro*`` smoke-test architectures). The same rule as
    training (:func:`mgfusion.backbones.registry.check_encoder_weights`); a user's or plugin's encoder is subject
    to it when it registers itself that way."""
    return requires_weights(name)


def _file_description(value: str, identity: dict[str, Any]) -> str:
    mtime = _dt.datetime.fromtimestamp(identity["mtime_ns"] / 1e9).astimezone().isoformat(timespec="seconds")
    return (f"{value} ({identity['size'] / 1e6:.1f} MB, modified {mtime}, head/tail sha256 "
            f"{identity['head_tail_sha256'][:12]})")


def _identity_of(value: str | None, key: str) -> dict[str, Any]:
    try:
        return weights_identity(value)
    except FileNotFoundError:
        raise ProfileConfigError(f"{key}={value}: file not found (relative paths are relative to the working "
                                 f"directory {os.getcwd()})") from None


def _build_overrides(name: str, s: ProfileSettings) -> dict[str, Any]:
    return {k: v for k, v in (s.encoder_overrides.get(name) or {}).items() if k != "weights"}


def registry_entry(name: str, s: ProfileSettings) -> ProfileEntry:
    """A registered encoder with ``weights.NAME`` (applies the random-init rule of the module docstring)."""
    value = s.encoder_weights(name)
    if value == RANDOM_INIT:  # weights.NAME=random: random initialisation asked for, for this encoder
        value = None
        explicit_random = True
    else:
        explicit_random = False
    identity = _identity_of(value, f"weights.{name}")
    build = _build_overrides(name, s)
    entry = ProfileEntry(name=name, kind="encoder", source="registry", description="", registry_name=name,
                         identity={"build": build, "weights": identity}, weights=value)
    if value is None:
        if not (explicit_random or needs_weights(name) or _registered_by_mgfusion(name)):
            entry.description = "no weights given: as built by its factory (a user or plugin encoder)"
            return entry
        if needs_weights(name) and not (s.allow_random_init or explicit_random):
            raise ProfileConfigError(
                f"{name} would be profiled with random initialisation: no weights are given for it, and a "
                f"random-init profile does not describe the pretrained encoder. Give weights.{name}=/path/to/"
                f"checkpoint, or weights.{name}={RANDOM_INIT} (or allow_random_init=true for every encoder) to profile "
                "the random-init architecture on purpose (a control; the tables then say 'random init').")
        if explicit_random:
            why = f"weights.{name}={RANDOM_INIT}"
        elif needs_weights(name):
            why = "allow_random_init=true"
        else:
            why = "smoke-test architecture without released weights"
        entry.random_init, entry.description = True, f"random init, seed {s.seed} ({why})"
        return entry
    entry.random_init = False
    if identity["kind"] == "hub":
        entry.description = f"timm {value}"
    else:
        entry.path = str(Path(value).expanduser().resolve())
        entry.description = _file_description(value, identity)
    return entry


# ---- encoders from training checkpoints --------------------------------------------------------------------------
def checkpoint_entries(entry: str, s: ProfileSettings) -> list[ProfileEntry]:
    """The fine-tuned encoder of ``PART@PATH`` and, with ``initial_weights``, its initial weights."""
    part = resolve_checkpoint_part(entry)
    if part.registry_name not in list_encoders():
        raise ProfileConfigError(f"{part.run_dir}/config.yaml builds encoder {part.registry_name!r}, which is not "
                                 "registered; import its module first: imports=[my_pkg.my_module]")
    identity = _identity_of(part.checkpoint, f"encoders entry {entry}")
    iteration = checkpoint_iteration(part.checkpoint)
    at = f"iteration {iteration}" if iteration is not None else "iteration unknown"
    rows = [ProfileEntry(
        name=part.name, kind="encoder", source="checkpoint", registry_name=part.registry_name, part=part,
        identity={"build": {"part": part.part, "node": dict(part.node)}, "weights": {**identity, "kind": "checkpoint",
                                                                                   "prefix": part.prefix}},
        path=part.checkpoint, random_init=False,
        description=f"{part.registry_name} {part.part}, fine-tuned: {part.prefix}* of "
                    f"{_file_description(part.checkpoint, identity)}, {at}")]
    if s.initial_weights:
        kind, path = initial_source(part)
        if kind == "random":
            init_identity: dict[str, Any] = {"kind": "none", "seed": s.seed}
            why = (f"random init, seed {s.seed}: the run had no initial weights for this encoder; its own random "
                   "draw is not reproduced")
        else:
            init_identity = _identity_of(path, f"the initial weights of {entry}")
            if kind == "model":
                init_identity = {**init_identity, "prefix": part.prefix}
                why = f"the run's init checkpoint weights={path}: {part.prefix}* of {_file_description(path, init_identity)}"
            elif kind == "frozen":
                init_identity = {**init_identity, "kind": "checkpoint", "prefix": part.prefix}
                why = ("the run kept this encoder frozen and had no initial weights for it, so its checkpoint "
                       "entries are its initial weights")
            else:
                why = f"the run config's weights: {_file_description(path, init_identity)}" \
                    if init_identity["kind"] == "file" else f"the run config's weights: timm {path}"
        rows.append(ProfileEntry(
            name=part.initial_name, kind="encoder", source="initial", registry_name=part.registry_name, part=part,
            identity={"build": {"part": part.part, "node": {k: v for k, v in part.node.items() if k != "weights"}},
                      "weights": init_identity},
            path=str(Path(path).expanduser().resolve()) if path and init_identity.get("kind") != "hub" else None,
            random_init=kind == "random", of=part.name,
            description=f"{part.registry_name} {part.part}, initial weights of run {part.run_dir}: {why}"))
    return rows


# ---- controls ----------------------------------------------------------------------------------------------------
def control_entries(encoders: Sequence[ProfileEntry], s: ProfileSettings) -> list[ProfileEntry]:
    """The control rows requested by ``controls.*`` (module docstring)."""
    rows = []
    if s.control("noise"):
        ch = s.control("noise_channels")
        channels = f"auto: channels of {encoders[0].name}" if ch == "auto" else [int(c) for c in ch]
        rows.append(ProfileEntry(
            name=NOISE, kind="control", source="noise", random_init=None,
            identity={"build": {"kind": "noise", "channels": channels, "rule": NOISE_RULE}, "weights": {"kind": "none"}},
            description=f"Gaussian-noise features (chance level), seed {s.seed} per image and stride, channels "
                        f"{'of ' + encoders[0].name if ch == 'auto' else list(channels)}"))
    if s.control("pixels"):
        rows.append(ProfileEntry(
            name=PIXELS, kind="control", source="pixels",
            identity={"build": {"kind": "pixels", "rule": PIXELS_RULE}, "weights": {"kind": "none"}},
            description="the image's own RGB pixels average-pooled to each stride's grid (edge-aligned baseline)"))
    if s.control("random_init"):
        for e in encoders:
            if e.random_init is not False:  # random-init already, or a plugin encoder whose weights are unknown
                continue
            build = e.identity["build"]
            if e.part is not None:
                build = {"part": e.part.part, "node": {k: v for k, v in e.part.node.items() if k != "weights"}}
            rows.append(ProfileEntry(
                name=random_init_name(e.name), kind="control", source="random_init", registry_name=e.registry_name,
                part=e.part, of=e.name, random_init=True,
                identity={"build": build, "weights": {"kind": "none", "seed": s.seed}},
                description=f"{e.registry_name} architecture of {e.name} with random init, seed {s.seed}"))
    return rows


def resolve_entries(s: ProfileSettings) -> list[ProfileEntry]:
    """Encoder rows (in ``encoders`` order, each checkpoint row followed by its initial row), then controls."""
    registered = list_encoders()
    unknown = [e for e in s.encoders if split_checkpoint_entry(e) is None and e not in registered]
    if unknown:
        raise ProfileConfigError(f"unknown encoder(s) {unknown}; registered encoders: {', '.join(registered)}"
                                 ". A user encoder's module must be imported first: imports=[my_pkg.my_module]")
    encoders: list[ProfileEntry] = []
    for e in s.encoders:
        encoders += [registry_entry(e, s)] if split_checkpoint_entry(e) is None else checkpoint_entries(e, s)
    names = [e.name for e in encoders]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ProfileConfigError(f"encoders name the same profile row twice: {repeated} (from {list(s.encoders)})")
    return encoders + control_entries(encoders, s)


def build_entry_encoder(entry: ProfileEntry, s: ProfileSettings, device: torch.device) -> Encoder:
    """The frozen encoder of an encoder row or a random-init control, on ``device`` (seeded init)."""
    torch.manual_seed(s.seed)  # random-init necks/encoders are reproducible across runs, resumes and ranks
    if entry.source == "checkpoint":
        return finetuned_encoder(entry.part, device)
    if entry.source == "initial":
        return initial_encoder(entry.part, device)
    if entry.source == "random_init" and entry.part is not None:
        return build_part_encoder(entry.part, weights=None, device=device)
    if entry.source in ("registry", "random_init"):
        name = entry.registry_name
        kwargs: dict[str, Any] = _build_overrides(name, s)
        if entry.source == "registry" and entry.weights:
            kwargs["weights"] = entry.weights
        if s.projection_free and name.startswith(("dinov", "samvit")):
            kwargs.setdefault("neck", "raw")
        return build_encoder(name, freeze=True, **kwargs).to(device)
    raise ValueError(f"{entry.name} ({entry.source}) has no encoder")
