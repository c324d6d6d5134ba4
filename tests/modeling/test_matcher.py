"""Hungarian matcher: optimal assignments (vs brute force) and cost terms (vs direct formulas), on every device."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

from mgfusion.modeling import HungarianMatcher, point_sample


def random_case(num_layers, batch, queries, num_targets, *, classes=4, size=16, seed=0, device="cpu"):
    """(L, B, Q, K+1) logits, (L, B, Q, size/4, size/4) mask logits and B targets with random masks, on ``device``."""
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(num_layers, batch, queries, classes + 1, generator=generator) * 2
    masks = torch.randn(num_layers, batch, queries, size // 4, size // 4, generator=generator) * 3
    targets = []
    for t in num_targets:
        targets.append(
            {
                "labels": torch.randint(0, classes, (t,), generator=generator),
                "masks": torch.rand(t, size, size, generator=generator) > 0.6,
            }
        )
    targets = [{k: v.to(device) for k, v in t.items()} for t in targets]
    return logits.to(device), masks.to(device), targets


def brute_force_min_cost(cost):
    """Minimal total cost of assigning every target (columns) to a distinct query (rows)."""
    queries, targets = cost.shape
    return min(
        sum(float(cost[q, t]) for t, q in enumerate(perm)) for perm in itertools.permutations(range(queries), targets)
    )


@pytest.mark.parametrize("seed", range(4))
def test_assignment_is_optimal_for_every_layer_and_image(seed, device):
    logits, masks, targets = random_case(2, 3, queries=5, num_targets=[3, 0, 4], seed=seed, device=device)
    matcher = HungarianMatcher(num_points=64)
    generator = torch.Generator(device=device).manual_seed(seed)
    matches = matcher.match_layers(logits, masks, targets, generator=generator)
    # the matcher's points: the first draw of the same generator
    points = torch.rand(64, 2, device=device, generator=torch.Generator(device=device).manual_seed(seed))
    costs = matcher.cost_matrices(logits, masks, targets, points)
    bounds = [0, 3, 3, 7]
    for layer in range(2):
        for b in range(3):
            queries, target_ids = matches[layer][b]
            assert len(queries) == len(target_ids) == len(targets[b]["labels"])
            assert len(set(queries.tolist())) == len(queries)
            assert sorted(target_ids.tolist()) == list(range(len(targets[b]["labels"])))
            if len(queries) == 0:
                continue
            block = costs[layer, b, :, bounds[b] : bounds[b + 1]].cpu()
            total = float(block[queries, target_ids].sum())
            assert total == pytest.approx(brute_force_min_cost(block), abs=1e-4)


def test_more_targets_than_queries_matches_every_query(device):
    logits, masks, targets = random_case(1, 1, queries=3, num_targets=[5], seed=7, device=device)
    queries, target_ids = HungarianMatcher(num_points=32).match_layers(logits, masks, targets)[0][0]
    assert sorted(queries.tolist()) == [0, 1, 2]
    assert len(set(target_ids.tolist())) == 3


def test_cost_terms_follow_their_definitions(device):
    logits, masks, targets = random_case(1, 1, queries=4, num_targets=[3], seed=11, device=device)
    points = torch.rand(50, 2, device=device)
    tgt = point_sample(targets[0]["masks"].float()[:, None], points[None].expand(3, -1, -1)).squeeze(1)
    pred = point_sample(masks[0, 0][:, None], points[None].expand(4, -1, -1)).squeeze(1)
    probs = logits[0, 0].softmax(-1)
    expected_class = -probs[:, targets[0]["labels"]]
    expected_bce = torch.stack(
        [
            torch.stack([F.binary_cross_entropy_with_logits(pred[q], tgt[t]) for t in range(3)])
            for q in range(4)
        ]
    )
    sig = pred.sigmoid()
    expected_dice = torch.stack(
        [
            torch.stack([1 - (2 * (sig[q] * tgt[t]).sum() + 1) / (sig[q].sum() + tgt[t].sum() + 1) for t in range(3)])
            for q in range(4)
        ]
    )
    for weights, expected in [
        ((1.0, 0.0, 0.0), expected_class),
        ((0.0, 1.0, 0.0), expected_bce),
        ((0.0, 0.0, 1.0), expected_dice),
    ]:
        matcher = HungarianMatcher(class_weight=weights[0], mask_weight=weights[1], dice_weight=weights[2])
        cost = matcher.cost_matrices(logits, masks, targets, points)[0, 0]
        torch.testing.assert_close(cost, expected, rtol=1e-5, atol=1e-5)


def test_single_layer_forward_matches_layer_api(device):
    logits, masks, targets = random_case(1, 2, queries=6, num_targets=[2, 3], seed=2, device=device)
    matcher = HungarianMatcher(num_points=40)
    torch.manual_seed(0)
    single = matcher({"pred_logits": logits[0], "pred_masks": masks[0]}, targets)
    torch.manual_seed(0)
    layered = matcher.match_layers(logits, masks, targets)[0]
    for (q1, t1), (q2, t2) in zip(single, layered):
        assert q1.tolist() == q2.tolist() and t1.tolist() == t2.tolist()


def test_bad_configuration_is_reported():
    with pytest.raises(ValueError, match="cannot all be 0"):
        HungarianMatcher(class_weight=0, mask_weight=0, dice_weight=0)
    logits, masks, targets = random_case(1, 2, queries=3, num_targets=[1, 1])
    with pytest.raises(ValueError, match="2 images"):
        HungarianMatcher().match_layers(logits, masks, targets[:1])
