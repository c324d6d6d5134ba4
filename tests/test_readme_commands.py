"""Every command shown in README.md and datasets/README.md (bash code blocks) is parsed and composed as its tool would
compose it, so the documentation and the configs cannot drift apart.

* Hydra tools (``@hydra.main``): the tool module is loaded (its resolvers registered), then its own config is composed
  with the command's overrides (``-m`` sweeps expanded into their jobs, as Hydra's basic sweeper does) and resolved,
  including the run folder. A training command of ``tools/train_net.py`` must also pass the encoder-weights policy
  (a foundation encoder needs weights or ``weights=random``), unless it resumes, evaluates or elides arguments
  (``...``). Nothing is run: commands needing real data or weights only need to compose.
* argparse scripts: every ``--option`` of the command must be an option the script defines.

``VAR="..."`` lines in a block define shell variables used by the following commands (``$VAR``).
"""

from __future__ import annotations

import importlib.util
import re
import shlex
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from mgfusion.engine import random_init_encoders

REPO = Path(__file__).resolve().parents[1]
DOCS = ("README.md", "datasets/README.md")
_ASSIGN = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)=(.*)$")


def _bash_blocks(text: str) -> list[list[str]]:
    """Logical lines (continuations joined, comments dropped) of each ```bash block."""
    blocks = []
    for block in re.findall(r"^```bash\n(.*?)^```", text, flags=re.MULTILINE | re.DOTALL):
        lines, current = [], ""
        for raw in block.splitlines():
            current += raw.rstrip()
            if current.endswith("\\"):
                current = current[:-1] + " "
                continue
            words = shlex.split(current, comments=True)
            if words:
                lines.append(current)
            current = ""
        blocks.append(lines)
    return blocks


def documented_commands() -> list[tuple[str, list[str]]]:
    """``(label, argv)`` of every ``python tools/...`` / ``python datasets/...`` command in the docs."""
    commands = []
    for doc in DOCS:
        for block in _bash_blocks((REPO / doc).read_text()):
            variables: dict[str, str] = {}
            for line in block:
                words = shlex.split(line, comments=True)
                if len(words) == 1 and _ASSIGN.match(words[0]):
                    name, value = _ASSIGN.match(words[0]).groups()
                    variables[name] = value
                    continue
                expanded = re.sub(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?",
                                  lambda m, known=variables: known.get(m[1], m[0]), line)
                argv = shlex.split(expanded, comments=True)
                if argv[:1] == ["python"] and argv[1].startswith(("tools/", "datasets/")):
                    commands.append((f"{doc}: {' '.join(argv)}"[:150], argv[1:]))
    return commands


COMMANDS = documented_commands()


def test_the_docs_show_the_main_commands():
    scripts = {argv[0] for _, argv in COMMANDS}
    assert {"tools/train_net.py", "tools/profile_encoders.py", "datasets/prepare_cityscapes.py"} <= scripts
    assert sum(argv[0] == "tools/train_net.py" for _, argv in COMMANDS) >= 6


def _load_tool(script: Path):
    spec = importlib.util.spec_from_file_location(f"_doc_{script.stem}", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # registers the tool's resolvers; main() only runs under __main__
    return module


def _hydra_main(source: str) -> tuple[str, str] | None:
    m = re.search(r"@hydra\.main\([^)]*config_path=\"([^\"]+)\"[^)]*config_name=\"([^\"]+)\"", source)
    return (m[1], m[2]) if m else None


def _argparse_options(script: Path) -> set[str]:
    sources = [script.read_text()]
    if re.search(r"^from _common import", sources[0], flags=re.MULTILINE):
        sources.append((script.parent / "_common.py").read_text())
    return {o for s in sources for o in re.findall(r"add_argument\(\s*\"(-[^\"]+)\"", s)}


def _jobs(overrides: list[str], multirun: bool) -> list[list[str]]:
    if not multirun:
        return [overrides]
    parsed = OverridesParser.create().parse_overrides(overrides)
    return [job for batch in BasicSweeper.split_arguments(parsed, max_batch_size=None) for job in batch]


@pytest.mark.parametrize("label, argv", COMMANDS, ids=[label for label, _ in COMMANDS])
def test_documented_command_composes(label, argv):
    script = REPO / argv[0]
    assert script.is_file(), f"{label}: {argv[0]} does not exist"
    source = script.read_text()
    hydra_main = _hydra_main(source)
    args = [a for a in argv[1:] if a != "..."]
    if hydra_main is None:  # an argparse script: its options must exist
        unknown = {a.split("=")[0] for a in args if a.startswith("--")} - _argparse_options(script)
        assert not unknown, f"{label}: {sorted(unknown)} are not options of {argv[0]}"
        return
    multirun = any(a in ("-m", "--multirun") for a in args)
    overrides = [a for a in args if a not in ("-m", "--multirun")]
    for o in overrides:
        if o.startswith("hydra/launcher="):
            plugin = o.split("=", 1)[1].split("_")[0]
            pytest.importorskip(f"hydra_plugins.hydra_{plugin}_launcher", reason=f"{label}: Hydra plugin not installed")
    _load_tool(script)
    config_path, config_name = hydra_main
    GlobalHydra.instance().clear()
    for job in _jobs(overrides, multirun):
        with initialize_config_dir(config_dir=str((script.parent / config_path).resolve()), version_base=None):
            cfg = compose(config_name, overrides=job, return_hydra_config=True)
        HydraConfig.instance().set_config(cfg)
        run_dir = cfg.hydra.sweep.subdir if multirun else cfg.hydra.run.dir
        assert isinstance(run_dir, str) and run_dir
        job_cfg = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
        OmegaConf.resolve(job_cfg)
        trains = argv[0] == "tools/train_net.py" and not (job_cfg.eval_only or job_cfg.resume or job_cfg.weights)
        if trains and "..." not in argv:  # what the documented training command would train from
            random_init_encoders(job_cfg.backbone)
