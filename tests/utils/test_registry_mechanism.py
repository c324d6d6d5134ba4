"""The shared registry contract (mgfusion/utils/registry.py): duplicates are errors, unknown names list the valid
ones with a close-match suggestion, one exception type."""

from __future__ import annotations

import pytest

from mgfusion.utils.registry import Registry, RegistryError


def _reg() -> Registry:
    reg: Registry = Registry("widget")

    @reg.register("full_model")
    def full_model() -> str:
        return "full"

    reg.register("per_param", lambda: "per")
    return reg


def test_register_get_and_listing():
    reg = _reg()
    assert reg.get("full_model")() == "full"
    assert reg.get("per_param")() == "per"
    assert reg.names() == ["full_model", "per_param"] and list(reg) == reg.names() and len(reg) == 2
    assert "full_model" in reg and "nope" not in reg


def test_duplicate_name_is_an_error_but_same_object_is_idempotent():
    reg = _reg()
    obj = reg.get("full_model")
    assert reg.register("full_model", obj) is obj  # re-import of the defining module
    with pytest.raises(RegistryError, match=r"widget 'full_model' is already registered .*unregister"):
        reg.register("full_model", lambda: "other")
    reg.unregister("full_model")
    reg.register("full_model", str)
    assert reg.get("full_model") is str


def test_unknown_name_lists_valid_names_and_suggests_the_closest():
    reg = _reg()
    with pytest.raises(RegistryError) as info:
        reg.get("full_modle")
    msg = str(info.value)
    assert msg.startswith("unknown widget 'full_modle'. Did you mean 'full_model'?")
    assert "Registered widgets: full_model, per_param" in msg
    assert not msg.startswith("'")  # no KeyError quoting
    # one exception type that callers catching KeyError or ValueError still see
    assert isinstance(info.value, KeyError) and isinstance(info.value, ValueError)


def test_unknown_without_close_match_has_no_suggestion_and_bad_names_are_rejected():
    reg = _reg()
    with pytest.raises(RegistryError) as info:
        reg.get("zzz")
    assert "Did you mean" not in str(info.value)
    with pytest.raises(RegistryError, match="non-empty string"):
        reg.register("", str)
    with pytest.raises(RegistryError, match="unknown widget"):
        reg.get(["unhashable"])  # type: ignore[arg-type]
