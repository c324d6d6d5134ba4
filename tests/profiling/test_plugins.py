"""Extending without editing the library: imports=[...] and mgfusion.plugins entry points (mgfusion.utils.plugins),
profiled through tools/profile_encoders.py from a folder outside the repository."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import pytest

from mgfusion.utils.plugins import (
    PluginImportError,
    import_modules,
    load_entry_point_plugins,
)
from tests.user_encoder_source import TINY_ENCODER_SOURCE

REPO = Path(__file__).resolve().parents[2]

ENCODER_SOURCE = TINY_ENCODER_SOURCE


def _write_plugin_tree(root: Path) -> None:
    """A user module (imports=) and an installed-looking plugin package with an entry point, outside the repo."""
    (root / "user_encoders.py").write_text(ENCODER_SOURCE + textwrap.dedent('''
        @register_encoder("user_tiny_encoder")
        def user_tiny_encoder(**kwargs):
            return TinyConvEncoder(**kwargs)
    '''))
    pkg = root / "mgf_test_plugin"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "encoders.py").write_text(ENCODER_SOURCE + textwrap.dedent('''
        def register():
            register_encoder("plugin_tiny_encoder")(lambda **kw: TinyConvEncoder(width=4, **kw))
    '''))
    dist = root / "mgf_test_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: mgf-test-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[mgfusion.plugins]\ntiny = mgf_test_plugin.encoders:register\n")


@pytest.mark.slow
def test_user_module_and_plugin_encoders_are_profiled_by_the_tool(tmp_path, tiny_images, profile_cli):
    user = tmp_path / "user_project"
    user.mkdir()
    _write_plugin_tree(user)
    assert REPO not in user.parents
    out = user / "profile"
    args = [f"images={tiny_images}", "encoders=[user_tiny_encoder,plugin_tiny_encoder]", "imports=[user_encoders]",
            f"output_dir={out}", "resolution=[64,64]", "num_workers=0", "device=cpu", "cost=false",
            "progress=false", "num_pca_images=0"]
    res = profile_cli(args, cwd=user, env={"PYTHONPATH": str(user)})
    assert res.returncode == 0, res.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["num_images"] == 2 and set(summary["encoders"]) == {"user_tiny_encoder", "plugin_tiny_encoder"}
    assert summary["source"]["plugins"] == ["tiny = mgf_test_plugin.encoders:register"]
    assert summary["weights"]["user_tiny_encoder"]["description"].startswith("no weights given: as built by its")
    assert {r["master"] for r in [summary["recommendation"]]} <= {"user_tiny_encoder", "plugin_tiny_encoder"}

    # without imports= the user's encoder is unknown, and the error says how to make it known
    res = profile_cli([a for a in args if not a.startswith("imports=")], cwd=user, env={"PYTHONPATH": str(user)})
    assert res.returncode == 1
    assert "unknown encoder(s) ['user_tiny_encoder']" in res.stdout and "imports=[my_pkg.my_module]" in res.stdout
    assert "Traceback" not in res.stdout


def test_import_modules_errors_name_the_module(tmp_path, monkeypatch):
    with pytest.raises(PluginImportError, match=r"module 'no_such_pkg\.mod' not found \(no module named "
                                                r"'no_such_pkg'\)\. Check .* PYTHONPATH"):
        import_modules(["no_such_pkg.mod"])
    (tmp_path / "broken_dep_mod.py").write_text("import surely_missing_dependency_xyz\n")
    (tmp_path / "raising_mod.py").write_text("raise RuntimeError('bad registration')\n")
    (tmp_path / "fine_mod.py").write_text("VALUE = 7\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(PluginImportError, match=r"importing 'broken_dep_mod' failed: ModuleNotFoundError: "
                                                r"No module named 'surely_missing_dependency_xyz'"):
        import_modules(["broken_dep_mod"])
    with pytest.raises(PluginImportError, match=r"importing 'raising_mod' failed: RuntimeError: bad registration"):
        import_modules(["raising_mod"])
    assert [m.VALUE for m in import_modules(["fine_mod"])] == [7]
    with pytest.raises(PluginImportError, match="is not a module name"):
        import_modules([""])
    for name in ("broken_dep_mod", "raising_mod", "fine_mod"):
        sys.modules.pop(name, None)


def test_entry_point_plugins_are_loaded_and_failures_name_the_distribution(tmp_path, monkeypatch):
    (tmp_path / "ep_mod.py").write_text("CALLS = []\ndef hook():\n    CALLS.append(1)\n")
    dist = tmp_path / "ep_demo-1.2.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: ep-demo\nVersion: 1.2\n")
    (dist / "entry_points.txt").write_text("[mgfusion.test_group]\na_module = ep_mod\nb_hook = ep_mod:hook\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        assert load_entry_point_plugins("mgfusion.test_group") == ["a_module = ep_mod", "b_hook = ep_mod:hook"]
        assert sys.modules["ep_mod"].CALLS == [1]
        (dist / "entry_points.txt").write_text("[mgfusion.test_group]\nbroken = ep_missing_mod\n")
        with pytest.raises(PluginImportError, match=r"entry point 'broken' = 'ep_missing_mod' of group "
                                                    r"'mgfusion.test_group' \(distribution ep-demo 1.2\) failed"):
            load_entry_point_plugins("mgfusion.test_group")
    finally:
        sys.modules.pop("ep_mod", None)
