"""Multi-scale deformable attention: both implementations against the corner-by-corner reference, on every device
(the CPU float64 reference is the yardstick for the device results)."""

from __future__ import annotations

import pytest
import torch

from mgfusion.modeling import DEFORM_ATTN_IMPLS, MSDeformAttn, ms_deform_attn
from mgfusion.modeling.deform_attn import ms_deform_attn_reference
from mgfusion.utils.registry import RegistryError


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


def test_reference_reads_pixel_centres_interpolates_between_them_and_reads_zero_outside():
    # one level of 2 x 3 pixels, one head of 1 channel; the value of pixel (row r, col c) is 10 r + c
    value = torch.tensor([[0.0, 1.0, 2.0], [10.0, 11.0, 12.0]], dtype=torch.float64).view(1, 6, 1, 1)
    centre = [(2 + 0.5) / 3, (1 + 0.5) / 2]  # (x, y) of pixel (1, 2)
    between = [(0 + 1) / 3, (0 + 0.5) / 2]  # halfway between pixels (0, 0) and (0, 1)
    edge = [0.0, (0 + 0.5) / 2]  # outer edge of pixel (0, 0): half of it, half zero padding
    outside = [1.5, 0.5]
    locations = torch.tensor([centre, between, edge, outside], dtype=torch.float64).view(1, 4, 1, 1, 1, 2)
    weights = torch.ones(1, 4, 1, 1, 1, dtype=torch.float64)
    out = ms_deform_attn_reference(value, [(2, 3)], locations, weights)
    torch.testing.assert_close(out.flatten(), torch.tensor([12.0, 0.5, 0.0, 0.0], dtype=torch.float64))
    value[0, 0] = 4.0  # pixel (0, 0)
    out = ms_deform_attn_reference(value, [(2, 3)], locations, weights * 0.5)
    torch.testing.assert_close(out.flatten(), torch.tensor([6.0, 1.25, 1.0, 0.0], dtype=torch.float64))


@pytest.mark.parametrize("impl", sorted(DEFORM_ATTN_IMPLS))
@pytest.mark.parametrize("spatial_shapes", SHAPES, ids=lambda s: "x".join(f"{h}-{w}" for h, w in s))
def test_matches_cpu_float64_reference_forward_and_gradients(impl, spatial_shapes, device):
    inputs = random_inputs(spatial_shapes)
    ours_in = [t.to(device).requires_grad_() for t in inputs]
    ref_in = [t.clone().requires_grad_() for t in inputs]
    ours = ms_deform_attn(ours_in[0], spatial_shapes, ours_in[1], ours_in[2], impl=impl)
    ref = ms_deform_attn_reference(ref_in[0], spatial_shapes, ref_in[1], ref_in[2])
    assert ours.device.type == device.type
    torch.testing.assert_close(ours.cpu(), ref, rtol=1e-10, atol=1e-10)
    grad_out = torch.randn_like(ref)
    ours_grads = torch.autograd.grad(ours, ours_in, grad_out.to(device))
    ref_grads = torch.autograd.grad(ref, ref_in, grad_out)
    for name, g_ours, g_ref in zip(["value", "locations", "weights"], ours_grads, ref_grads):
        torch.testing.assert_close(g_ours.cpu(), g_ref, rtol=1e-9, atol=1e-9, msg=f"{impl}: gradient of {name} differs")


@pytest.mark.parametrize("impl", sorted(DEFORM_ATTN_IMPLS))
def test_float32_matches_float64_reference(impl, device):
    spatial_shapes = [(16, 12), (8, 6), (4, 3)]
    value, locations, weights = random_inputs(spatial_shapes, queries=50, heads=4, dim=8, points=4, seed=3)
    ref = ms_deform_attn_reference(value, spatial_shapes, locations, weights)
    value, locations, weights = (t.float().to(device) for t in (value, locations, weights))
    ours = ms_deform_attn(value, spatial_shapes, locations, weights, impl=impl)
    assert ours.dtype == torch.float32 and ours.device.type == device.type
    torch.testing.assert_close(ours.cpu().double(), ref, rtol=1e-5, atol=1e-5)


def test_points_far_outside_read_zero_and_get_zero_gradient(device):
    spatial_shapes = [(4, 4), (2, 2)]
    value, locations, weights = (t.to(device) for t in random_inputs(spatial_shapes, seed=5))
    locations = torch.where(torch.rand_like(locations) < 0.5, locations - 3.0, locations + 3.0)
    for impl in DEFORM_ATTN_IMPLS:
        loc = locations.clone().requires_grad_()
        out = ms_deform_attn(value, spatial_shapes, loc, weights, impl=impl)
        assert out.abs().max() == 0
        (grad,) = torch.autograd.grad(out.sum(), loc)
        assert grad.abs().max() == 0


def test_implementations_agree_on_module_output_and_grads(device):
    torch.manual_seed(0)
    spatial_shapes = [(8, 10), (4, 5), (2, 3)]
    module = MSDeformAttn(32, num_heads=4, num_levels=3, num_points=2).to(device)
    with torch.no_grad():
        module.sampling_proj.weight.normal_(0, 0.1)
    tokens = sum(h * w for h, w in spatial_shapes)
    x = torch.randn(2, tokens, 32).to(device)
    reference_points = torch.rand(1, tokens, 2).to(device)
    outs, grads = {}, {}
    for impl in sorted(DEFORM_ATTN_IMPLS):
        module.core, module.impl = DEFORM_ATTN_IMPLS.get(impl), impl
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
def test_autocast_close_to_fp32(impl, dtype, device):
    torch.manual_seed(1)
    spatial_shapes = [(8, 8), (4, 4), (2, 2)]
    module = MSDeformAttn(32, num_heads=4, num_levels=3, num_points=4, impl=impl).to(device)
    tokens = sum(h * w for h, w in spatial_shapes)
    x = torch.randn(2, tokens, 32).to(device)
    reference_points = torch.rand(1, tokens, 2).to(device)
    expected = module(x, reference_points, x, spatial_shapes)
    xi = x.clone().requires_grad_()
    with torch.autocast(device.type, dtype=dtype):
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


def test_implementations_are_a_registry_with_helpful_errors():
    assert DEFORM_ATTN_IMPLS.names() == ["embedding_bag", "grid_sample"]
    with pytest.raises(RegistryError, match="'grid_sampel'. Did you mean 'grid_sample'"):
        ms_deform_attn(*random_inputs([(2, 2)])[:1], [(2, 2)], *random_inputs([(2, 2)])[1:], impl="grid_sampel")
    with pytest.raises(RegistryError, match="already registered"):
        DEFORM_ATTN_IMPLS.register("grid_sample", ms_deform_attn_reference)


def test_bad_inputs_are_reported():
    with pytest.raises(ValueError, match="unknown deformable attention implementation 'cuda'.*embedding_bag"):
        MSDeformAttn(16, 4, 2, 2, impl="cuda")
    with pytest.raises(ValueError, match="divisible"):
        MSDeformAttn(18, 4, 2, 2)
    value, locations, weights = random_inputs([(4, 4), (2, 2)])
    with pytest.raises(ValueError, match="spatial_shapes"):
        ms_deform_attn(value, [(4, 4), (3, 3)], locations, weights)
