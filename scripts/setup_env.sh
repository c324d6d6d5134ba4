#!/usr/bin/env bash
# Create (or reuse) ./.venv and install mgfusion with everything it needs. Idempotent: a second run only
# re-installs what changed (it keys on pyproject.toml and this script). Prints each step.
#
# Environment:
#   PYTHON   interpreter used to create the venv (default: python3)
#   VENV     venv location (default: .venv in the repository root)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
STAMP="$VENV/.mgfusion-setup"
KEY=$(cat pyproject.toml scripts/setup_env.sh | sha256sum | cut -d' ' -f1)

step() { printf '\n\033[1m[setup] %s\033[0m\n' "$*"; }

if [ ! -x "$VENV/bin/python" ]; then
    step "creating virtual environment $VENV with $($PYTHON --version)"
    "$PYTHON" -m venv "$VENV"
else
    step "reusing virtual environment $VENV"
fi
PY="$VENV/bin/python"
PIP=("$PY" -m pip --disable-pip-version-check)

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$KEY" ] && "$PY" -c "import mgfusion, detectron2, timm, hydra, onnxruntime" 2>/dev/null; then
    step "environment up to date (delete $STAMP to force a reinstall)"
    exit 0
fi

if "$PY" -c "import torch, torchvision" 2>/dev/null; then
    step "torch $("$PY" -c 'import torch; print(torch.__version__)') already installed"
else
    # torch 2.14.1 + torchvision 0.29.1 are the pair that works with PyPI's torchvision on these machines
    # (torch 2.13.0 fails with 'operator torchvision::nms does not exist'); see docs/install.md.
    step "installing torch==2.14.1 torchvision==0.29.1"
    "${PIP[@]}" install torch==2.14.1 torchvision==0.29.1
fi

step "installing mgfusion (editable) with its dependencies and the dev extra (pytest, pytest-xdist, scikit-image, onnx, peft for LoRA)"
"${PIP[@]}" install -e ".[dev]"

# detectron2 comes after mgfusion's own dependencies: importing it needs fvcore, iopath, pycocotools, ...
if "$PY" -c "import detectron2" 2>/dev/null; then
    step "detectron2 already importable: $("$PY" -c 'import detectron2, os; print(os.path.dirname(detectron2.__file__))') (skipping its install)"
else
    # detectron2 is not on PyPI under its own name. sal-detectron2 is a PyPI wheel of its 2024 main branch,
    # tagged cp310; we install only its pure-Python code into site-packages, without its numpy<2 metadata
    # constraints. pip prints a dependency-conflict notice here and exits 0; that notice is expected.
    SITE=$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
    step "installing detectron2's Python code (sal-detectron2==0.7.2) into $SITE"
    "${PIP[@]}" install --no-deps --only-binary=:all: --python-version 3.10 --implementation cp \
        --target "$SITE" --upgrade sal-detectron2==0.7.2 2>&1 | grep -v -E 'dependency (resolver|conflicts)|requires (black|numpy)' || true
    "$PY" -c "import detectron2" || { echo "[setup] detectron2 failed to import after install" >&2; exit 1; }
fi

if "$PY" -c "import panopticapi" 2>/dev/null; then
    step "panopticapi already installed"
else
    # panopticapi-lite provides the `panopticapi` module used by detectron2's COCO panoptic evaluator.
    step "installing panopticapi-lite==0.2.0 (--no-deps)"
    "${PIP[@]}" install --no-deps panopticapi-lite==0.2.0
fi

if "$PY" -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('mask2former') is None)" 2>/dev/null; then
    step "maskformer2 already installed"
else
    # The original Mask2Former modules, for the checkpoint-converter test (tests/export) and the benchmark. Its
    # metadata pins detectron2 from GitHub and old hydra/omegaconf, hence --no-deps; its top-level package is never
    # imported (its __init__ needs detectron2's compiled ops), only mask2former.modeling.* submodules.
    step "installing maskformer2==0.1 (--no-deps; built from its sdist with this venv's setuptools)"
    "$PY" -c "import setuptools, wheel" 2>/dev/null || "${PIP[@]}" install setuptools wheel
    "${PIP[@]}" install --no-deps --no-build-isolation maskformer2==0.1
fi

step "checking imports"
"$PY" - <<'PY'
import importlib.util
import numpy, torch, timm, detectron2, hydra, mgfusion, onnx, onnxruntime, peft
assert importlib.util.find_spec("mask2former") is not None, "maskformer2 is not installed"
print(f"python ok: numpy {numpy.__version__}, torch {torch.__version__}, timm {timm.__version__}, "
      f"detectron2 {detectron2.__version__}, hydra {hydra.__version__}, mgfusion {mgfusion.__version__}, "
      f"onnx {onnx.__version__}, onnxruntime {onnxruntime.__version__}, peft {peft.__version__}")
PY
echo "$KEY" > "$STAMP"
step "done: activate with 'source $VENV/bin/activate'"
