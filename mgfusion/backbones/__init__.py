"""Encoder registry, timm-based encoders, pyramid necks and the master-auxiliary fusion backbone."""
