"""Multi-scale deformable attention against a plain bilinear-sampling reference written here."""

from __future__ import annotations

import pytest
import torch

from mgfusion.modeling import DEFORM_ATTN_IMPLS, MSDeformAttn, ms_deform_attn


def reference_ms_deform_attn(value, spatial_shapes, locations, weights):
    """Explicit 4-corner bilinear reads per level, zero outside the map, pixel centres at (i + 0.5) / size."""
    batch, _, heads, dim = value.shape
    _, num_queries, _, _, num_points, _ = locations.shape
    out = value.new_zeros(batch, num_queries, heads, dim)
    b_idx = torch.arange(batch).view(batch, 1, 1, 1)
    m_idx = torch.arange(heads).view(1, 1, heads, 1)
    start = 0
    for level, (h, w) in enumerate(spatial_shapes):
        level_value = value[:, start : start + h * w].reshape(batch, h, w, heads, dim)
        start += h * w
        x = locations[:, :, :, level, :, 0] * w - 0.5  # (B, Lq, M, P)
        y = locations[:, :, :, level, :, 1] * h - 0.5
        x0, y0 = x.detach().floor(), y.detach().floor()
        for dy in (0, 1):
            for dx in (0, 1):
                xi, yi = x0 + dx, y0 + dy
                corner_weight = (1 - (x - xi).abs()) * (1 - (y - yi).abs())
                valid = (xi >= 0) & (xi < w) & (yi >= 0) & (yi < h)
                read = level_value[b_idx, yi.clamp(0, h - 1).long(), xi.clamp(0, w - 1).long(), m_idx]
                contribution = (weights[:, :, :, level] * corner_weight * valid).unsqueeze(-1) * read
                out = out + contribution.sum(3)
    return out.reshape(batch, num_queries, heads * dim)


def random_inputs(spatial_shapes, *, batch=2, queries=7, heads=2, dim=3, points=3, dtype=torch.float64, seed=0):
    generator = torch.Generator().manual_seed(seed)
    levels = len(spatial_shapes)
    tokens = sum(h * w for h, w in spatial_shapes)
    value = torch.randn(batch, tokens, heads, dim, generator=generator, dtype=dtype)
    # include points outside [0, 1] (partly and fully out of the map)
    locations = torch.rand(batch, queries, heads, levels, points, 2, generator=generator, dtype=dtype) * 1.4 - 0.2
    weights = torch.rand(batch, queries, heads, levels, points, generator=generator, dtype=dtype)
    weights = weights / weights.sum((-1, -2), keepdim=True)
    return value, locations, weights


SHAPES = [
    [(6, 5), (3, 3), (2, 1)],
    [(8, 8), (4, 4), (2, 2)],
    [(1, 1)],
    [(3, 7), (5, 2)],
]


@pytest.mark.parametrize("impl", sorted(DEFORM_ATTN_IMPLS))
@pytest.mark.parametrize("spatial_shapes", SHAPES, ids=lambda s: "x".join(f"{h}-{w}" for h, w in s))
def test_matches_reference_forward_and_gradients(impl, spatial_shapes):
    inputs = random_inputs(spatial_shapes)
    ours_in = [t.clone().requires_grad_() for t in inputs]
    ref_in = [t.clone().requires_grad_() for t in inputs]
    ours = ms_deform_attn(ours_in[0], spatial_shapes, ours_in[1], ours_in[2], impl=impl)
    ref = reference_ms_deform_attn(ref_in[0], spatial_shapes, ref_in[1], ref_in[2])
    torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-10)
    grad_out = torch.randn_like(ref)
    ours_grads = torch.autograd.grad(ours, ours_in, grad_out)
    ref_grads = torch.autograd.grad(ref, ref_in, grad_out)
    for name, g_ours, g_ref in zip(["value", "locations", "weights"], ours_grads, ref_grads):
        torch.testing.assert_close(g_ours, g_ref, rtol=1e-9, atol=1e-9, msg=f"{impl}: gradient of {name} differs")


@pytest.mark.parametrize("impl", sorted(DEFORM_ATTN_IMPLS))
def test_float32_matches_float64_reference(impl):
    spatial_shapes = [(16, 12), (8, 6), (4, 3)]
    value, locations, weights = random_inputs(spatial_shapes, queries=50, heads=4, dim=8, points=4, seed=3)
    ref = reference_ms_deform_attn(value, spatial_shapes, locations, weights)
    ours = ms_deform_attn(value.float(), spatial_shapes, locations.float(), weights.float(), impl=impl)
    assert ours.dtype == torch.float32
    torch.testing.assert_close(ours.double(), ref, rtol=1e-5, atol=1e-5)


def test_points_far_outside_read_zero_and_get_zero_gradient():
    spatial_shapes = [(4, 4), (2, 2)]
    value, locations, weights = random_inputs(spatial_shapes, seed=5)
    locations = torch.where(torch.rand_like(locations) < 0.5, locations - 3.0, locations + 3.0)
    for impl in DEFORM_ATTN_IMPLS:
        loc = locations.clone().requires_grad_()
        out = ms_deform_attn(value, spatial_shapes, loc, weights, impl=impl)
        assert out.abs().max() == 0
        (grad,) = torch.autograd.grad(out.sum(), loc)
        assert grad.abs().max() == 0


def test_implementations_agree_on_module_output_and_grads():
    torch.manual_seed(0)
    spatial_shapes = [(8, 10), (4, 5), (2, 3)]
    module = MSDeformAttn(32, num_heads=4, num_levels=3, num_points=2)
    with torch.no_grad():
        module.sampling_proj.weight.normal_(0, 0.1)
    tokens = sum(h * w for h, w in spatial_shapes)
    x = torch.randn(2, tokens, 32)
    reference_points = torch.rand(1, tokens, 2)
    outs, grads = {}, {}
    for impl in sorted(DEFORM_ATTN_IMPLS):
        module.core, module.impl = DEFORM_ATTN_IMPLS[impl], impl
        xi = x.clone().requires_grad_()
        out = module(xi, reference_points, xi, spatial_shapes)
        assert out.shape == (2, tokens, 32)
        outs[impl] = out
        grads[impl] = torch.autograd.grad(out.square().sum(), [xi] + list(module.parameters()))
    first, second = sorted(DEFORM_ATTN_IMPLS)
    torch.testing.assert_close(outs[first], outs[second], rtol=1e-5, atol=1e-5)
    for g1, g2 in zip(grads[first], grads[second]):
        torch.testing.assert_close(g1, g2, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("impl", sorted(DEFORM_ATTN_IMPLS))
def test_autocast_close_to_fp32(impl, dtype):
    torch.manual_seed(1)
    spatial_shapes = [(8, 8), (4, 4), (2, 2)]
    module = MSDeformAttn(32, num_heads=4, num_levels=3, num_points=4, impl=impl)
    tokens = sum(h * w for h, w in spatial_shapes)
    x = torch.randn(2, tokens, 32)
    reference_points = torch.rand(1, tokens, 2)
    expected = module(x, reference_points, x, spatial_shapes)
    xi = x.clone().requires_grad_()
    with torch.autocast("cpu", dtype=dtype):
        out = module(xi, reference_points, xi, spatial_shapes)
    assert out.dtype == dtype
    torch.testing.assert_close(out.float(), expected, rtol=0.05, atol=0.05)
    (grad,) = torch.autograd.grad(out.float().sum(), xi)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_initial_offsets_form_a_ring_per_head():
    module = MSDeformAttn(16, num_heads=4, num_levels=2, num_points=3)
    offsets = module.sampling_proj.bias[: 4 * 2 * 3 * 2].view(4, 2, 3, 2)
    # head h points along angle 2 pi h / 4; point p at (p + 1) times the unit step; same for every level
    torch.testing.assert_close(offsets[:, 0], offsets[:, 1])
    expected_dirs = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]])
    torch.testing.assert_close(offsets[:, 0, 0], expected_dirs, atol=1e-6, rtol=0)
    torch.testing.assert_close(offsets[:, 0, 2], 3 * expected_dirs, atol=1e-6, rtol=0)
    assert module.sampling_proj.weight.abs().sum() == 0


def test_bad_inputs_are_reported():
    with pytest.raises(ValueError, match="unknown deformable attention implementation 'cuda'.*embedding_bag"):
        MSDeformAttn(16, 4, 2, 2, impl="cuda")
    with pytest.raises(ValueError, match="divisible"):
        MSDeformAttn(18, 4, 2, 2)
    value, locations, weights = random_inputs([(4, 4), (2, 2)])
    with pytest.raises(ValueError, match="spatial_shapes"):
        ms_deform_attn(value, [(4, 4), (3, 3)], locations, weights)
