"""mgfusion: metric-guided fusion of visual foundation model encoders for segmentation.

Subpackages:
    backbones  encoder registry (timm-based), pyramid necks, fusion backbone (torch/timm only)
    metrics    label-free Structural Coherence / Edge Fidelity metrics (torch/numpy only)
    modeling   Mask2Former on detectron2's registries
    data       dataset registration, mappers, synthetic data (detectron2)
    engine     training, evaluation, checkpointing, launch (detectron2)
"""

__version__ = "0.1.0"
