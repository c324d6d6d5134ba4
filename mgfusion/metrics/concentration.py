"""Edge Concentration (EC) and Near-edge Concentration (NC): one rule per variant (docs/metrics.md, EC / NC).

Every rule maps ``(energy, strong, centre, border, r1, r2)`` to per-image ``EC, NC`` plus their chance levels and
lifts (``X_lift = share / chance``; 1 = what features unrelated to the image get on average; set to 1 when the
chance level is 0, i.e. the image has no edges). ``energy`` ``(B,H,W)`` = Sobel magnitude of the PCA map, zero
outside V; ``strong`` = the strong feature-edge set E_F; ``centre`` = image edge centerlines.

* ``reference`` (authors' code): core K = D_r1(C), outer O = D_r2(C), ring = O \\ K within V, far = V \\ O;
  T = sum of energy over E_F; EC = 1 - far/T (= outer share), NC = ring/T, both on E_F. Chance = area shares of
  O and of the ring in V.
* ``paper`` (literal eqs. 4-5): T = all energy in V; EC = core share, NC = ring share. Chance = area shares.
* ``corrected`` (ours): with d(p) the Chebyshev distance (feature px) from p to the nearest centerline,
  kernels k_r(d) = max(0, 1 - d / (r + 1)), i.e. the mean over tolerances t = 0..r of [d <= t].
  EC_share = sum_{E_F} w k_r1(d) / T and NC_share = sum_{E_F} w k_r2(d) / T (energy-weighted closeness at the tight
  and the loose tolerance), chance c = mean over V of the same kernel (the value for edges placed independently of
  the image), lift = share / c, and the reported EC, NC are the chance-corrected (kappa-form)
  ``clip((share - c) / (1 - c), 0, 1)``: 0 at chance, 1 when all energy lies on the centerlines. Both kernels
  strictly decrease with distance, so every shift of an aligned map away from the image edges lowers EC and NC.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from mgfusion.metrics.primitives import dilate, interior_mask
from mgfusion.utils.registry import Registry

__all__ = ["CONCENTRATION_RULES", "edge_concentration"]

ConcentrationRule = Callable[..., dict[str, torch.Tensor]]
#: ``name -> rule(energy, strong, centre, border, r1, r2)``; ``MetricConfig.concentration`` picks one.
CONCENTRATION_RULES: Registry[ConcentrationRule] = Registry("concentration rule")
_register = CONCENTRATION_RULES.register


def _masked_sum(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (x * mask.to(x.dtype)).flatten(1).sum(dim=1)


def _area_share(region: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    n_valid = valid.sum().clamp_min(1).to(torch.float32)
    return (region & valid).flatten(1).sum(dim=1).to(torch.float32) / n_valid


def _lift(share: torch.Tensor, chance: torch.Tensor) -> torch.Tensor:
    return torch.where(chance > 0, share / chance.clamp_min(1e-12), torch.ones_like(share))


def _pack(ec, nc, ec_share, nc_share, ec_chance, nc_chance) -> dict[str, torch.Tensor]:
    return {"EC": ec, "NC": nc, "EC_chance": ec_chance, "NC_chance": nc_chance,
            "EC_lift": _lift(ec_share, ec_chance), "NC_lift": _lift(nc_share, nc_chance)}


@_register("reference")
def _reference(energy, strong, centre, border, r1, r2):
    valid = interior_mask(*energy.shape[-2:], border, energy.device)
    core, outer = dilate(centre, r1), dilate(centre, r2)
    ring = outer & ~core & valid
    far = ~outer & valid
    total = _masked_sum(energy, strong).clamp_min(1e-8)
    nc = (_masked_sum(energy, strong & ring) / total).clamp(0.0, 1.0)
    ec = 1.0 - (_masked_sum(energy, strong & far) / total).clamp(0.0, 1.0)
    outer_share = (_masked_sum(energy, strong & outer & valid) / total).clamp(0.0, 1.0)
    return _pack(ec, nc, outer_share, nc, _area_share(outer, valid), _area_share(ring, valid))


@_register("paper")
def _paper(energy, strong, centre, border, r1, r2):
    valid = interior_mask(*energy.shape[-2:], border, energy.device)
    core, outer = dilate(centre, r1) & valid, dilate(centre, r2)
    ring = outer & ~core & valid
    total = _masked_sum(energy, valid.expand_as(energy)).clamp_min(1e-8)
    ec = (_masked_sum(energy, core) / total).clamp(0.0, 1.0)
    nc = (_masked_sum(energy, ring) / total).clamp(0.0, 1.0)
    return _pack(ec, nc, ec, nc, _area_share(core, valid), _area_share(ring, valid))


def _closeness(centre: torch.Tensor, r1: int, r2: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Kernels k_r1(d), k_r2(d) ``(B,H,W)`` from nested 3x3 dilations of the centerlines (d capped at r2 + 1)."""
    cover = centre.to(torch.float32)
    count = cover.clone()  # number of t in 0..r2 with d <= t
    for _ in range(r2):
        cover = F.max_pool2d(cover.unsqueeze(1), 3, stride=1, padding=1).squeeze(1)
        count += cover
    k2 = count / (r2 + 1)
    k1 = (count - (r2 - r1)).clamp_min(0.0) / (r1 + 1)
    return k1, k2


def _kappa(share: torch.Tensor, chance: torch.Tensor) -> torch.Tensor:
    room = 1.0 - chance
    return torch.where(room > 1e-6, ((share - chance) / room.clamp_min(1e-6)).clamp(0.0, 1.0),
                       torch.zeros_like(share))


@_register("corrected")
def _corrected(energy, strong, centre, border, r1, r2):
    valid = interior_mask(*energy.shape[-2:], border, energy.device)
    k1, k2 = _closeness(centre, r1, r2)
    w = energy * strong.to(energy.dtype)
    total = w.flatten(1).sum(dim=1).clamp_min(1e-8)
    ec_share = (w * k1).flatten(1).sum(dim=1) / total
    nc_share = (w * k2).flatten(1).sum(dim=1) / total
    n_valid = valid.sum().clamp_min(1).to(torch.float32)
    ec_chance = _masked_sum(k1, valid.expand_as(k1)) / n_valid
    nc_chance = _masked_sum(k2, valid.expand_as(k2)) / n_valid
    return _pack(_kappa(ec_share, ec_chance), _kappa(nc_share, nc_chance), ec_share, nc_share, ec_chance, nc_chance)


def edge_concentration(rule: str, energy: torch.Tensor, strong: torch.Tensor, centre: torch.Tensor, *,
                       border: int, r1: int, r2: int) -> dict[str, torch.Tensor]:
    """EC/NC ``(B,)`` (+ chance levels and lifts) of ``rule`` (one of CONCENTRATION_RULES; an unknown name raises
    ``RegistryError``, a ValueError, listing the registered rules)."""
    return CONCENTRATION_RULES.get(rule)(energy, strong, centre, border, r1, r2)
