"""The encoders mgfusion registers: DINOv3, DINOv2, SAM ViT, SAM2 Hiera, Swin (all via timm), and two scaled-down
"micro" architectures for CPU smoke runs (tests and the demo; random init only, no released weights exist).

=====================  =====================================  =================  ===============================
name                   timm model                             pyramid            official weights file
=====================  =====================================  =================  ===============================
dinov3_vit{s,b,l}16    vit_{small,base,large}_patch16_dinov3  neck from /16      dinov3_vit*16_pretrain_*.pth
                       _qkvb
dinov2_vit{s,b,l}14    vit_{small,base,large}_patch14_dinov2  neck from /14      dinov2_vit*14_pretrain.pth
dinov2_vit{s,b,l}14    ..._patch14_reg4_dinov2                neck from /14      dinov2_vit*14_reg4_pretrain.pth
_reg
samvit_{b,l}           samvit_{base,large}_patch16            neck from /16      sam_vit_{b,l}_*.pth
sam2_hiera_{t,s,       sam2_hiera_{tiny,small,base_plus,      native 4 stages    sam2[.1]_hiera_*.pt
bplus,l}               large}
sam2_hiera_{t,s,       the same trunks + SAM2's FPN neck       FPN neck, 256 ch   sam2[.1]_hiera_*.pt (trunk and
bplus,l}_fpn           (:mod:`.sam2_fpn`)                                         neck)
swin_b                 swin_base_patch4_window12_384          native 4 stages    swin_base_patch4_window12_384*.pth
dinov3_micro16         DINOv3 architecture, 96 dim, 4 blocks  neck from /16      (none)
sam2_hiera_micro       SAM2 Hiera architecture, 32 dim,       native 4 stages    (none)
                       stages (1, 1, 2, 1)
=====================  =====================================  =================  ===============================

DINOv3 uses timm's ``_qkvb`` variants: the official checkpoints carry qkv biases and the non-``_qkvb`` models would
silently drop them (docs/install.md, encoder weights offline). Plain-ViT encoders accept ``neck=``, ``neck_channels=``, ``taps=``; every encoder
accepts ``weights=``, ``strict=`` and ``timm_kwargs=``.

Every encoder with released weights is registered with ``requires_weights=True``: a training config that leaves its
``weights`` null is refused (``weights=random`` trains it from random initialisation on purpose). The micro
architectures have no released weights and are exempt.
"""

from __future__ import annotations

from typing import Any

from .registry import register_encoder
from .sam2_fpn import SAM2FpnEncoder
from .timm_encoders import HierarchicalEncoder, PlainViTEncoder

_SIZES = {"s": "small", "b": "base", "l": "large"}


def _vit(model_name: str, family: str, final_norm: bool = True, **kwargs: Any) -> PlainViTEncoder:
    kwargs.setdefault("final_norm", final_norm)
    return PlainViTEncoder(model_name=model_name, family=family, **kwargs)


def _hier(model_name: str, family: str, **kwargs: Any) -> HierarchicalEncoder:
    return HierarchicalEncoder(model_name=model_name, family=family, **kwargs)


def _sam2_fpn(model_name: str, family: str, **kwargs: Any) -> SAM2FpnEncoder:
    return SAM2FpnEncoder(model_name=model_name, family=family, **kwargs)


def _with_timm_defaults(factory, model_name: str, family: str, timm_defaults: dict[str, Any], **more: Any):
    """A factory whose ``timm_kwargs`` start from ``timm_defaults`` (user-given keys win)."""

    def build(**kwargs: Any):
        tk = {**timm_defaults, **(kwargs.pop("timm_kwargs", None) or {})}
        defaults = dict(more)
        if kwargs.get("neck", "paper") != "paper" and "neck_channels" not in kwargs:
            defaults.pop("neck_channels", None)  # default channels belong to the default (paper) neck
        return factory(model_name, family, timm_kwargs=tk, **{**defaults, **kwargs})

    build.__name__ = build.__qualname__ = f"build_{model_name}"
    build.__doc__ = f"{factory.__name__.strip('_')} encoder over timm ``{model_name}`` ({family} weights)."
    return build


for _k, _size in _SIZES.items():
    register_encoder(f"dinov3_vit{_k}16", requires_weights=True)(
        _with_timm_defaults(_vit, f"vit_{_size}_patch16_dinov3_qkvb", "dinov3", {}))
    register_encoder(f"dinov2_vit{_k}14", requires_weights=True)(
        _with_timm_defaults(_vit, f"vit_{_size}_patch14_dinov2", "dinov2", {"dynamic_img_size": True}))
    register_encoder(f"dinov2_vit{_k}14_reg", requires_weights=True)(
        _with_timm_defaults(_vit, f"vit_{_size}_patch14_reg4_dinov2", "dinov2", {"dynamic_img_size": True}))

for _k in ("b", "l"):
    # SAM ViT: keep timm's img_size=1024 (its rel-pos tables are sized for it) and feed multiples of 16;
    # it has no final norm (its conv neck is replaced by mgfusion's pyramid neck).
    register_encoder(f"samvit_{_k}", requires_weights=True)(
        _with_timm_defaults(_vit, f"samvit_{_SIZES[_k]}_patch16", "samvit", {}, final_norm=False))

for _k, _name in {"t": "tiny", "s": "small", "bplus": "base_plus", "l": "large"}.items():
    register_encoder(f"sam2_hiera_{_k}", requires_weights=True)(_with_timm_defaults(_hier, f"sam2_hiera_{_name}", "sam2", {}))
    # SAM2's image encoder as the authors' single-encoder baseline builds it: trunk + SAM2's FPN neck
    register_encoder(f"sam2_hiera_{_k}_fpn", requires_weights=True)(
        _with_timm_defaults(_sam2_fpn, f"sam2_hiera_{_name}", "sam2", {}))

register_encoder("swin_b", requires_weights=True)(
    _with_timm_defaults(
        _hier, "swin_base_patch4_window12_384", "swin", {"strict_img_size": False, "dynamic_img_size": True}
    )
)

# Scaled-down architectures for CPU smoke tests and the demo (same code paths as the full models).
register_encoder("dinov3_micro16")(
    _with_timm_defaults(_vit, "vit_small_patch16_dinov3_qkvb", "dinov3",
                        {"embed_dim": 96, "depth": 4, "num_heads": 3}, neck_channels=(32, 64, 96, 128)))
register_encoder("sam2_hiera_micro")(
    _with_timm_defaults(_hier, "sam2_hiera_tiny", "sam2",
                        {"embed_dim": 32, "num_heads": 1, "stages": (1, 1, 2, 1), "global_att_blocks": (3,)}))

del _k, _size, _name
