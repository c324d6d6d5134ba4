"""Extending without editing the library (README, "Adding an encoder"): a user's encoder module and config folder,
both outside the repository, trained through tools/train_net.py with imports=[...] and Hydra's searchpath."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.engine.helpers import TRAIN_NET, cli_env
from tests.user_encoder_source import TINY_ENCODER_SOURCE

USER_MODULE = TINY_ENCODER_SOURCE + '''

@register_encoder("user_tiny_conv")
def user_tiny_conv(**kwargs):
    return TinyConvEncoder(**kwargs)
'''


def _user_tree(root: Path) -> Path:
    """``root/user_encoders.py`` and ``root/configs/backbone/user_tiny_conv.yaml``, as a user would write them."""
    (root / "configs" / "backbone").mkdir(parents=True)
    (root / "user_encoders.py").write_text(USER_MODULE)
    (root / "configs" / "backbone" / "user_tiny_conv.yaml").write_text(textwrap.dedent("""\
        _target_: mgfusion.backbones.build_encoder
        name: user_tiny_conv
        width: 8
    """))
    return root


def _train(user: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    args = [sys.executable, str(TRAIN_NET), f"hydra.searchpath=[file://{user / 'configs'}]", "backbone=user_tiny_conv",
            "model=mask2former_tiny", "dataset=synthetic_semantic", "solver=smoke_cpu", "runtime=smoke", "device=cpu",
            "solver.max_iter=2", f"dataset.register.root={user / 'data'}", f"output_dir={out}", *extra]
    env = dict(cli_env(), PYTHONPATH=str(user))
    return subprocess.run(args, cwd=user, env=env, capture_output=True, text=True, timeout=600, check=False)


@pytest.mark.slow
def test_user_encoder_outside_the_repository_trains_through_train_net(tmp_path):
    user = _user_tree(tmp_path / "my_project")
    # without imports=[...] nothing registers the encoder: a clear error naming it (no traceback), nothing written
    refused = _train(user, tmp_path / "refused")
    assert refused.returncode == 2, refused.stderr[-3000:]
    assert "unknown encoder 'user_tiny_conv'" in refused.stderr and "Traceback" not in refused.stderr
    assert not (tmp_path / "refused" / "config.yaml").exists()

    done = _train(user, tmp_path / "run", "imports=[user_encoders]")
    assert done.returncode == 0, done.stderr[-3000:]
    final = json.loads((tmp_path / "run" / "final_metrics.json").read_text())
    assert 0.0 <= final["results"]["sem_seg"]["mIoU"] <= 100.0
    assert (tmp_path / "run" / "model_final.pth").is_file()


def test_missing_user_module_is_named(tmp_path):
    user = _user_tree(tmp_path / "my_project")
    done = _train(user, tmp_path / "run", "imports=[no_such_user_module]")
    assert done.returncode == 2, done.stderr[-3000:]
    assert "imports: module 'no_such_user_module' not found" in done.stderr and "PYTHONPATH" in done.stderr
