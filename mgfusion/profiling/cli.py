"""Hydra wiring of ``tools/profile_encoders.py`` (kept importable so tests compose the same config).

Call :func:`register_hydra_config` before composing ``configs/tools/profile_encoders.yaml`` (the tool does):

* it stores the config node ``profile_encoders_open_maps``, which the YAML lists in its defaults: the maps
  ``weights``, ``encoder_overrides`` and ``metric_hparams`` are declared non-struct there, so the documented
  ``weights.NAME=FILE`` / ``encoder_overrides.NAME.neck=raw`` / ``metric_hparams.r1=2`` overrides add keys (Hydra
  closes every map, even an empty one, unless its node says otherwise);
* it registers the resolver ``mgfusion_profile_job_dir`` that names each Hydra multirun job's folder under
  ``output_dir`` from the job's overrides (:func:`job_dirname`), so ``-m`` sweeps never share a run folder.
"""

from __future__ import annotations

import hashlib
import re

OPEN_MAPS_NODE = "profile_encoders_open_maps"
JOB_DIR_RESOLVER = "mgfusion_profile_job_dir"
MAX_JOB_DIRNAME = 80


def job_dirname(override_dirname: str) -> str:
    """A bounded, readable folder name for a multirun job from Hydra's ``override_dirname``.

    Characters other than letters, digits and ``._,=+-`` become ``_``; names longer than 80 characters keep their
    first 60 and get a 10-hex-digit SHA-1 of the full override string, so distinct jobs stay distinct.
    """
    text = str(override_dirname or "")
    name = re.sub(r"[^A-Za-z0-9._,=+-]", "_", text) or "defaults"
    if len(name) > MAX_JOB_DIRNAME:
        name = name[:60] + "-" + hashlib.sha1(text.encode()).hexdigest()[:10]
    return name


def register_hydra_config() -> None:
    """Register the open-maps config node and the multirun job-folder resolver (idempotent)."""
    from hydra.core.config_store import ConfigStore
    from omegaconf import OmegaConf

    node = OmegaConf.create({"weights": {}, "encoder_overrides": {}, "metric_hparams": {}})
    for key in ("weights", "encoder_overrides", "metric_hparams"):
        OmegaConf.set_struct(node[key], False)
    ConfigStore.instance().store(name=OPEN_MAPS_NODE, node=node)
    if not OmegaConf.has_resolver(JOB_DIR_RESOLVER):
        OmegaConf.register_new_resolver(JOB_DIR_RESOLVER, job_dirname)
