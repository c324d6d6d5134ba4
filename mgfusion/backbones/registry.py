"""Encoder registry: ``@register_encoder(name)``, ``build_encoder(name, **overrides)``, ``list_encoders()``.

Every entry is a callable (a factory function or an :class:`~mgfusion.backbones.base.Encoder` subclass) that takes
keyword arguments and returns an encoder. ``build_encoder`` adds the options every encoder shares (``freeze``).

Example::

    @register_encoder("my_vit")
    def my_vit(**kwargs) -> Encoder:
        return PlainViTEncoder(model_name="vit_small_patch16_224", family="vit", **kwargs)

    enc = build_encoder("my_vit", weights="/path/to/weights.safetensors", freeze=True)
"""

from __future__ import annotations

import difflib
from typing import Any, Callable, TypeVar

from torch import nn

_ENCODERS: dict[str, Callable[..., nn.Module]] = {}

F = TypeVar("F", bound=Callable[..., nn.Module])


class UnknownEncoderError(KeyError):
    """Raised for an encoder name that is not registered; the message lists the registered names."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0])


def register_encoder(name: str) -> Callable[[F], F]:
    """Decorator that registers an encoder factory (function or class) under ``name``.

    Raises ``ValueError`` if ``name`` is already taken (registries never silently replace entries).
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"encoder name must be a non-empty string, got {name!r}")

    def decorator(factory: F) -> F:
        if name in _ENCODERS and _ENCODERS[name] is not factory:
            raise ValueError(f"encoder {name!r} is already registered (by {_ENCODERS[name]!r})")
        _ENCODERS[name] = factory
        return factory

    return decorator


def list_encoders(pattern: str | None = None) -> list[str]:
    """Sorted names of all registered encoders, optionally filtered by a substring ``pattern``."""
    names = sorted(_ENCODERS)
    if pattern:
        names = [n for n in names if pattern in n]
    return names


def get_encoder_factory(name: str) -> Callable[..., nn.Module]:
    """The factory registered under ``name``; unknown names raise :class:`UnknownEncoderError` listing valid ones."""
    try:
        return _ENCODERS[name]
    except KeyError:
        close = difflib.get_close_matches(str(name), _ENCODERS, n=3)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise UnknownEncoderError(
            f"unknown encoder {name!r}.{hint} Registered encoders: {', '.join(list_encoders())}"
        ) from None


def build_encoder(name: str, *, freeze: bool = False, **overrides: Any) -> nn.Module:
    """Build the encoder registered as ``name``.

    Args:
        name: registry name, e.g. ``"dinov3_vitb16"`` (see :func:`list_encoders`).
        freeze: freeze the encoder after building (no gradients, eval mode kept, forward without autograd graph).
        **overrides: keyword arguments forwarded to the factory (e.g. ``weights=``, ``neck=``, ``taps=``).
    """
    encoder = get_encoder_factory(name)(**overrides)
    encoder.registry_name = name  # lets the fusion backbone and profiles refer to it by name
    if freeze:
        encoder.freeze()
    return encoder
