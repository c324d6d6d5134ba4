"""Ship a trained model: where a model's config and weights come from (a run folder, a config file or
configs/train.yaml plus overrides), shared by the tools that load trained models."""

from .model_source import CONFIG_DIR, build_trained_model, default_weights, load_config

__all__ = ["CONFIG_DIR", "build_trained_model", "default_weights", "load_config"]
