"""Encoder registry: ``@register_encoder(name)``, ``build_encoder(name, **overrides)``, ``list_encoders()``.

Every entry is a callable (a factory function or an :class:`~mgfusion.backbones.base.Encoder` subclass) that takes
keyword arguments and returns an encoder. ``build_encoder`` adds the options every encoder shares (``freeze``).

Example::

    @register_encoder("my_vit")
    def my_vit(**kwargs) -> Encoder:
        return PlainViTEncoder(model_name="vit_small_patch16_224", family="vit", **kwargs)

    enc = build_encoder("my_vit", weights="/path/to/weights.safetensors", freeze=True)

Random initialisation of a foundation encoder is an explicit choice. Encoders registered with
``requires_weights=True`` (every released foundation model of the zoo; not the CPU "micro" architectures) are
refused by the training entry point when their ``weights`` is null: pass a weights file, ``"hub"``, or
``weights="random"`` (:data:`RANDOM_INIT`) to train from random initialisation on purpose. :func:`build_encoder`
itself accepts ``weights="random"`` for every encoder (it builds the factory's random initialisation).
"""

from __future__ import annotations

from typing import Any, Callable, TypeVar

from torch import nn

from mgfusion.utils.registry import Registry, RegistryError

#: every encoder factory by name (the shared registry contract: mgfusion/utils/registry.py)
ENCODERS: Registry[Callable[..., nn.Module]] = Registry("encoder")
_REQUIRES_WEIGHTS: set[str] = set()

#: ``weights`` value that asks for random initialisation on purpose (a foundation encoder's ``null`` is refused).
RANDOM_INIT = "random"

F = TypeVar("F", bound=Callable[..., nn.Module])

#: the error of an unknown encoder name (kept under its old name for callers that catch it)
UnknownEncoderError = RegistryError


def register_encoder(name: str, *, requires_weights: bool = False) -> Callable[[F], F]:
    """Decorator that registers an encoder factory (function or class) under ``name``.

    ``requires_weights=True`` marks a foundation encoder with released weights: a training config that leaves its
    ``weights`` null is refused (see :func:`check_encoder_weights`). A name that is already taken raises
    :class:`~mgfusion.utils.registry.RegistryError` (registries never silently replace entries).
    """

    def decorator(factory: F) -> F:
        ENCODERS.register(name, factory)
        if requires_weights:
            _REQUIRES_WEIGHTS.add(name)
        return factory

    return decorator


def list_encoders(pattern: str | None = None) -> list[str]:
    """Sorted names of all registered encoders, optionally filtered by a substring ``pattern``."""
    names = ENCODERS.names()
    if pattern:
        names = [n for n in names if pattern in n]
    return names


def get_encoder_factory(name: str) -> Callable[..., nn.Module]:
    """The factory registered under ``name``; an unknown name raises
    :class:`~mgfusion.utils.registry.RegistryError` listing the valid ones and the closest matches."""
    return ENCODERS.get(name)


class MissingWeightsError(ValueError):
    """A foundation encoder would be trained from random initialisation without that being asked for."""


def requires_weights(name: str) -> bool:
    """Whether ``name`` was registered as a foundation encoder whose random initialisation must be asked for."""
    get_encoder_factory(name)  # unknown names raise
    return name in _REQUIRES_WEIGHTS


def check_encoder_weights(name: str, weights: Any, *, key: str = "weights") -> bool:
    """Refuse a foundation encoder without weights; returns True when the encoder will be randomly initialised.

    Args:
        name: registry name of the encoder.
        weights: its ``weights`` setting: a file, ``"hub"``/``"hub:<tag>"``, :data:`RANDOM_INIT` or None.
        key: where the setting lives, for the message (e.g. ``backbone.master.weights``).

    Raises:
        MissingWeightsError: ``weights`` is None/empty and ``name`` :func:`requires_weights`.
    """
    if weights == RANDOM_INIT:
        return True
    if weights:
        return False
    if requires_weights(name):
        raise MissingWeightsError(
            f"{key} is not set, so the foundation encoder {name!r} would be trained from random initialisation, "
            f"which gives results unrelated to the pretrained model. Pass its released checkpoint "
            f"({key}=/path/to/file; the files per encoder are listed in README.md, 'Using a real checkpoint'), "
            f"{key}=hub for timm's pretrained weights (needs internet), or {key}={RANDOM_INIT} to train from random "
            "initialisation on purpose (recorded in the run's metrics)."
        )
    return True


def build_encoder(name: str, *, freeze: bool = False, **overrides: Any) -> nn.Module:
    """Build the encoder registered as ``name``.

    Args:
        name: registry name, e.g. ``"dinov3_vitb16"`` (see :func:`list_encoders`).
        freeze: freeze the encoder after building (no gradients, eval mode kept, forward without autograd graph).
        **overrides: keyword arguments forwarded to the factory (e.g. ``weights=``, ``neck=``, ``taps=``);
            ``weights="random"`` (:data:`RANDOM_INIT`) builds the factory's random initialisation.
    """
    if overrides.get("weights") == RANDOM_INIT:
        del overrides["weights"]  # the factory's default: random initialisation
    encoder = get_encoder_factory(name)(**overrides)
    encoder.registry_name = name  # lets the fusion backbone and profiles refer to it by name
    if freeze:
        encoder.freeze()
    return encoder
