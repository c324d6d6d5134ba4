"""Set criterion: loss values, deep supervision keys, output formats, empty targets, autocast; on every device."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mgfusion.modeling import SetCriterion


def make_targets(batch=2, size=32, seed=0, side=10, device="cpu"):
    """2 + b square masks per image b, corners on multiples of 4 pixels."""
    generator = torch.Generator().manual_seed(seed)
    targets = []
    for b in range(batch):
        masks = torch.zeros(2 + b, size, size, dtype=torch.bool)
        for i in range(2 + b):
            y, x = (torch.randint(0, (size - side) // 4, (2,), generator=generator) * 4).tolist()
            masks[i, y : y + side, x : x + side] = True
        targets.append({"labels": (torch.arange(2 + b) % 3).to(device), "masks": masks.to(device)})
    return targets


def random_outputs(num_preds=3, batch=2, queries=6, classes=3, size=32, seed=1, device="cpu"):
    """(L, B, Q, K+1) class logits and (L, B, Q, size/4, size/4) mask logits: leaf tensors on ``device``."""
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(num_preds, batch, queries, classes + 1, generator=generator)
    masks = torch.randn(num_preds, batch, queries, size // 4, size // 4, generator=generator)
    return logits.to(device).requires_grad_(), masks.to(device).requires_grad_()


def seeded(device, seed):
    """A generator for the point sampling on ``device``."""
    return torch.Generator(device=device).manual_seed(seed)


def stacked(logits, masks):
    return {"layer_logits": logits, "layer_masks": masks, "pred_logits": logits[-1], "pred_masks": masks[-1]}


def test_deep_supervision_keys_and_fp32_scalars(device):
    criterion = SetCriterion(num_classes=3, num_points=200).to(device)
    logits, masks = random_outputs(device=device)
    losses = criterion(stacked(logits, masks), make_targets(device=device))
    expected = {f"loss_{k}{s}" for k in ("ce", "mask", "dice") for s in ("", "_0", "_1")}
    assert set(losses) == expected
    assert all(v.dim() == 0 and v.dtype == torch.float32 and torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    assert logits.grad.abs().sum() > 0 and masks.grad.abs().sum() > 0

    no_aux = SetCriterion(num_classes=3, num_points=200, deep_supervision=False).to(device)
    assert set(no_aux(stacked(logits, masks), make_targets(device=device))) == {"loss_ce", "loss_mask", "loss_dice"}


def test_original_output_format_gives_the_same_losses(device):
    criterion = SetCriterion(num_classes=3, num_points=300).to(device)
    logits, masks = random_outputs(device=device)
    original = {
        "pred_logits": logits[-1],
        "pred_masks": masks[-1],
        "aux_outputs": [{"pred_logits": logits[i], "pred_masks": masks[i]} for i in range(2)],
    }
    a = criterion(stacked(logits, masks), make_targets(device=device), generator=seeded(device, 5))
    b = criterion(original, make_targets(device=device), generator=seeded(device, 5))
    for key in a:
        torch.testing.assert_close(a[key], b[key])


def test_class_loss_is_weighted_cross_entropy_of_the_matching(device):
    criterion = SetCriterion(num_classes=3, num_points=100, class_weight=2.0, no_object_weight=0.1).to(device)
    logits, masks = random_outputs(num_preds=1, device=device)
    targets = make_targets(device=device)
    losses = criterion(stacked(logits, masks), targets, generator=seeded(device, 9))
    matches = criterion.matcher.match_layers(logits, masks, targets, generator=seeded(device, 9))[0]
    target_classes = torch.full((2, 6), 3, device=device)
    for b, (q, t) in enumerate(matches):
        target_classes[b, q.to(device)] = targets[b]["labels"][t.to(device)]
    weight = torch.tensor([1.0, 1.0, 1.0, 0.1], device=device)
    expected = F.cross_entropy(logits[0].reshape(-1, 4), target_classes.flatten(), weight=weight)
    torch.testing.assert_close(losses["loss_ce"], 2.0 * expected)


def test_mask_losses_small_for_correct_masks_and_large_for_wrong_ones(device):
    targets = make_targets(size=64, side=24, device=device)
    criterion = SetCriterion(num_classes=3, num_points=500).to(device)
    queries = 6
    logits = torch.full((1, 2, queries, 4), -5.0, device=device)
    good = torch.full((1, 2, queries, 16, 16), -8.0, device=device)
    for b, t in enumerate(targets):
        n = len(t["labels"])
        logits[0, b, torch.arange(n, device=device), t["labels"]] = 5.0
        logits[0, b, n:, 3] = 5.0
        down = F.interpolate(t["masks"].float()[None], size=(16, 16), mode="area")[0]
        good[0, b, :n] = (down - 0.5) * 16
    bad = -good
    good_losses = criterion(stacked(logits, good), targets)
    bad_losses = criterion(stacked(logits, bad), targets)
    assert good_losses["loss_ce"] < 0.05
    assert good_losses["loss_dice"] < 0.2 * bad_losses["loss_dice"]
    assert good_losses["loss_mask"] < 0.2 * bad_losses["loss_mask"]


def test_images_without_targets(device):
    criterion = SetCriterion(num_classes=3, num_points=100).to(device)
    logits, masks = random_outputs(num_preds=2, device=device)
    empty = [{"labels": torch.zeros(0, dtype=torch.int64, device=device),
              "masks": torch.zeros(0, 32, 32, dtype=torch.bool, device=device)}] * 2
    losses = criterion(stacked(logits, masks), empty)
    assert losses["loss_mask"] == 0 and losses["loss_dice"] == 0
    assert losses["loss_ce"] > 0
    sum(losses.values()).backward()  # graph stays connected
    assert masks.grad is not None and logits.grad.abs().sum() > 0


def test_loss_weights_scale_the_losses(device):
    logits, masks = random_outputs(num_preds=1, device=device)
    base = SetCriterion(num_classes=3, num_points=100).to(device)(
        stacked(logits, masks), make_targets(device=device), generator=seeded(device, 0)
    )
    scaled = SetCriterion(num_classes=3, num_points=100, class_weight=4.0, mask_weight=10.0, dice_weight=1.0).to(device)
    scaled.matcher = SetCriterion(num_classes=3, num_points=100).matcher  # same matching costs
    out = scaled(stacked(logits, masks), make_targets(device=device), generator=seeded(device, 0))
    torch.testing.assert_close(out["loss_ce"], 2 * base["loss_ce"])
    torch.testing.assert_close(out["loss_mask"], 2 * base["loss_mask"])
    torch.testing.assert_close(out["loss_dice"], base["loss_dice"] / 5)


def test_bf16_predictions_give_fp32_losses(device):
    criterion = SetCriterion(num_classes=3, num_points=100).to(device)
    logits, masks = random_outputs(device=device)
    fp32 = criterion(stacked(logits, masks), make_targets(device=device), generator=seeded(device, 3))
    with torch.autocast(device.type, dtype=torch.bfloat16):
        losses = criterion(stacked(logits.bfloat16(), masks.bfloat16()), make_targets(device=device),
                           generator=seeded(device, 3))
    assert set(losses) == set(fp32)
    for key, value in losses.items():  # computed in float32 from inputs rounded to bfloat16 (8 mantissa bits)
        assert value.dtype == torch.float32, key
        torch.testing.assert_close(value, fp32[key], rtol=0.02, atol=0.01, msg=key)


def test_wrong_number_of_classes_is_reported(device):
    logits, masks = random_outputs(classes=5, device=device)
    with pytest.raises(ValueError, match="3 classes"):
        SetCriterion(num_classes=3).to(device)(stacked(logits, masks), make_targets(device=device))
