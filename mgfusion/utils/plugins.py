"""Extending mgfusion without editing it: import a user's modules, and installed plugin packages, before building.

Registration in mgfusion happens when a module runs its ``@register_encoder(...)`` (or ``register_injection``,
dataset registration, ...) decorators. A tool can only build what has been registered, so the tools import these
modules first:

* ``imports=[my_pkg.my_encoders]`` on a tool's command line -> :func:`import_modules` (the module must be importable:
  installed, or its folder on ``PYTHONPATH``);
* an installed package that declares an entry point in the group ``mgfusion.plugins`` ->
  :func:`load_entry_point_plugins`. In the package's ``pyproject.toml``::

      [project.entry-points."mgfusion.plugins"]
      my_encoders = "my_pkg.my_encoders"            # a module, imported for its registrations
      my_datasets = "my_pkg.data:register_all"      # or a function, called without arguments

Both raise :class:`PluginImportError` naming the module (or entry point and distribution) and the fix.
"""

from __future__ import annotations

import importlib
import importlib.metadata
from collections.abc import Iterable
from types import ModuleType

ENTRY_POINT_GROUP = "mgfusion.plugins"

__all__ = ["ENTRY_POINT_GROUP", "PluginImportError", "import_modules", "load_entry_point_plugins", "load_plugins"]


class PluginImportError(ImportError):
    """A user module or plugin could not be imported; the message names it and says how to fix it."""


def import_modules(names: Iterable[str]) -> list[ModuleType]:
    """Import each dotted module name in order (e.g. ``["my_pkg.my_encoders"]``); returns the modules.

    A module that is not found raises :class:`PluginImportError` naming it and pointing at ``PYTHONPATH``; an error
    raised while the module runs (e.g. a missing dependency of it, or a duplicate registry name) is re-raised as
    :class:`PluginImportError` naming the module, with the original error chained.
    """
    modules = []
    for name in names:
        if not isinstance(name, str) or not name.strip():
            raise PluginImportError(f"imports: {name!r} is not a module name (expected e.g. my_pkg.my_encoders)")
        name = name.strip()
        try:
            modules.append(importlib.import_module(name))
        except ModuleNotFoundError as e:
            if e.name and (name == e.name or name.startswith(e.name + ".")):
                raise PluginImportError(
                    f"imports: module {name!r} not found (no module named {e.name!r}). Check that it is installed "
                    "or that its folder is on PYTHONPATH, e.g. PYTHONPATH=/path/to/folder_containing_"
                    f"{name.split('.')[0]} python tools/...") from e
            raise PluginImportError(f"imports: importing {name!r} failed: {type(e).__name__}: {e}") from e
        except Exception as e:
            raise PluginImportError(f"imports: importing {name!r} failed: {type(e).__name__}: {e}") from e
    return modules


#: entry points already loaded in this process, ``(group, name, value)``: loading is done once per process, so a
#: plugin's registration function never runs twice (a second run would register its names again, an error).
_LOADED: set[tuple[str, str, str]] = set()


def load_entry_point_plugins(group: str = ENTRY_POINT_GROUP) -> list[str]:
    """Load every installed entry point of ``group`` (sorted by name); returns ``"name = value"`` of each.

    A module entry point is imported; an entry point that names a callable (``module:function``) is called with no
    arguments after its module is imported. Each entry point is loaded once per process; later calls list it again
    without calling it.
    """
    loaded = []
    for ep in sorted(importlib.metadata.entry_points(group=group), key=lambda e: (e.name, e.value)):
        key = (group, ep.name, ep.value)
        if key in _LOADED:
            loaded.append(f"{ep.name} = {ep.value}")
            continue
        dist = getattr(ep, "dist", None)
        origin = f"entry point {ep.name!r} = {ep.value!r} of group {group!r}" + (
            f" (distribution {dist.name} {dist.version})" if dist is not None else "")
        try:
            obj = ep.load()
            if callable(obj) and not isinstance(obj, ModuleType):
                obj()
        except Exception as e:
            raise PluginImportError(f"loading plugin {origin} failed: {type(e).__name__}: {e}. Fix or uninstall "
                                    "that package") from e
        _LOADED.add(key)
        loaded.append(f"{ep.name} = {ep.value}")
    return loaded


def load_plugins(imports: Iterable[str] = ()) -> list[str]:
    """What every tool does before building anything: import ``imports`` (a tool's ``imports=[...]`` option), then
    the installed ``mgfusion.plugins`` entry points; returns the entry points loaded."""
    import_modules(list(imports or ()))
    return load_entry_point_plugins()
