"""freeze(): no gradients to parameters, eval mode kept, no autograd graph by default."""

import torch

from mgfusion.backbones import build_encoder


def test_frozen_encoder_gets_no_gradient_and_stays_in_eval():
    torch.manual_seed(0)
    frozen = build_encoder("sam2_hiera_micro", freeze=True)
    head = torch.nn.Conv2d(frozen.out_channels[8], 1, 1)
    model = torch.nn.ModuleDict({"enc": frozen, "head": head})
    model.train()
    assert frozen.frozen and not frozen.training and not frozen.trunk.training
    assert all(not p.requires_grad for p in frozen.parameters())
    feats = frozen(torch.randn(2, 3, 64, 64))
    assert all(f.grad_fn is None and not f.requires_grad for f in feats.values()), "no autograd graph"
    head(feats[8]).square().mean().backward()
    assert all(p.grad is None for p in frozen.parameters())
    assert head.weight.grad is not None and head.weight.grad.abs().sum() > 0


def test_trainable_encoder_receives_gradients():
    enc = build_encoder("sam2_hiera_micro").train()
    sum(f.mean() for f in enc(torch.randn(1, 3, 64, 64)).values()).backward()
    grads = [p.grad for p in enc.parameters()]
    assert all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads)


def test_freeze_without_no_grad_keeps_input_gradients():
    enc = build_encoder("dinov3_micro16").freeze(no_grad=False)
    x = torch.randn(1, 3, 32, 32, requires_grad=True)
    enc(x)[16].sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is None for p in enc.parameters())
