"""Mask2Former on detectron2's registries."""
