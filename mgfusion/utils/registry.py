"""The one registry mechanism of mgfusion: a name → object table with one behaviour everywhere.

Every pluggable concept (encoders, pyramid necks, injection operators, dataset mappers, augmentations, weight
families, evaluators, gradient clippers, deformable-attention implementations, concentration rules, ...) is a
:class:`Registry`. The contract, identical for all of them:

* ``@REG.register("name")`` (or ``REG.register("name", obj)``) adds an entry; a name that is already taken raises
  :class:`RegistryError` (registering the *same* object again under the same name is a no-op, so re-importing a
  module is harmless). Nothing is ever silently replaced.
* ``REG.get("name")`` returns the entry; an unknown name raises :class:`RegistryError` that lists the valid names and
  suggests the closest ones ("did you mean ...?").
* ``"name" in REG``, ``REG.names()`` (sorted), ``len(REG)``, ``REG.items()``.

:class:`RegistryError` subclasses both ``KeyError`` and ``ValueError`` so callers that catch either keep working,
and its message is printed without ``KeyError``'s quoting.

Example::

    from mgfusion.utils.registry import Registry

    CLIPPERS = Registry("gradient clipper")

    @CLIPPERS.register("full_model")
    def clip_full_model(params, max_norm): ...

    CLIPPERS.get("full_modle")   # RegistryError: unknown gradient clipper 'full_modle'. Did you mean 'full_model'? ...
"""

from __future__ import annotations

import difflib
from typing import Any, Callable, Generic, Iterator, TypeVar, overload

__all__ = ["Registry", "RegistryError"]

T = TypeVar("T")


class RegistryError(KeyError, ValueError):
    """An unknown or duplicate registry name; the message names the registry, the valid names and a fix."""

    def __str__(self) -> str:  # KeyError would print the message in quotes
        return str(self.args[0]) if self.args else ""


class Registry(Generic[T]):
    """A named table of objects with strict registration and helpful lookups (see the module docstring).

    Args:
        kind: what the entries are, in words, used in messages (e.g. ``"encoder"``, ``"injection operator"``).
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    # ---- registration ------------------------------------------------------------------------------------------
    @overload
    def register(self, name: str) -> Callable[[T], T]: ...

    @overload
    def register(self, name: str, obj: T) -> T: ...

    def register(self, name: str, obj: Any = None) -> Any:
        """Register ``obj`` under ``name``; without ``obj``, return a decorator that does it.

        Raises:
            RegistryError: ``name`` is empty or already holds a different object.
        """
        if not isinstance(name, str) or not name:
            raise RegistryError(f"a {self.kind} name must be a non-empty string, got {name!r}")

        def add(item: T) -> T:
            old = self._entries.get(name)
            if old is not None and old is not item:
                raise RegistryError(
                    f"{self.kind} {name!r} is already registered (by {_describe(old)}); choose another name, "
                    f"or call unregister({name!r}) first if replacing it is intended"
                )
            self._entries[name] = item
            return item

        return add if obj is None else add(obj)

    def unregister(self, name: str) -> T:
        """Remove and return the entry ``name`` (for tests and deliberate replacement)."""
        self.get(name)
        return self._entries.pop(name)

    # ---- lookup ------------------------------------------------------------------------------------------------
    def get(self, name: str) -> T:
        """The entry registered as ``name``.

        Raises:
            RegistryError: unknown name; the message lists the registered names and the closest matches.
        """
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            raise RegistryError(self.unknown_message(name)) from None

    def unknown_message(self, name: Any) -> str:
        """The message of an unknown-name error: the close matches, then every registered name."""
        close = difflib.get_close_matches(str(name), list(self._entries), n=3, cutoff=0.6)
        hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        valid = ", ".join(self.names()) or "(none registered)"
        return f"unknown {self.kind} {name!r}.{hint} Registered {self.kind}s: {valid}"

    def names(self) -> list[str]:
        """Sorted registered names."""
        return sorted(self._entries)

    def items(self) -> list[tuple[str, T]]:
        """``(name, entry)`` pairs sorted by name."""
        return sorted(self._entries.items())

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {len(self)} entries)"


def _describe(obj: Any) -> str:
    module = getattr(obj, "__module__", None)
    qualname = getattr(obj, "__qualname__", None) or type(obj).__qualname__
    return f"{module}.{qualname}" if module else repr(obj)
