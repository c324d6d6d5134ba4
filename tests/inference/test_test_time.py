"""Sliding-window and test-time-augmented inference: exact equalities that hold by construction."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mgfusion.inference import (
    TestTimeConfig,
    TestTimeModel,
    augmented_semantic,
    load_model,
    sliding_window_semantic,
    window_grid,
)
from mgfusion.inference.sources import read_image
from tests.inference.helpers import val_images


class PerPixelSegmentor(nn.Module):
    """detectron2-convention semantic model whose scores at a pixel depend only on that pixel's colour (a 1x1
    convolution + softmax), so it commutes with flips and crops. ``ramp`` > 0 adds ramp * (x / W) to class 0's
    logit, which breaks the mirror symmetry."""

    def __init__(self, num_classes: int = 4, ramp: float = 0.0) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, num_classes, 1)
        self.ramp = ramp

    def forward(self, batched_inputs: list[dict]) -> list[dict]:
        outputs = []
        for inp in batched_inputs:
            logits = self.conv(inp["image"].float()[None] / 255.0)[0]
            if self.ramp:
                width = logits.shape[-1]
                logits[0] += self.ramp * torch.arange(width, dtype=torch.float32) / width
            scores = logits.softmax(0)
            size = (int(inp.get("height", scores.shape[-2])), int(inp.get("width", scores.shape[-1])))
            outputs.append({"sem_seg": F.interpolate(scores[None], size=size, mode="bilinear")[0]})
        return outputs


def _random_image(height: int, width: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (3, height, width), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)


def _plain_and_tta(model: nn.Module, image: torch.Tensor, config: dict) -> tuple[torch.Tensor, torch.Tensor]:
    inputs = [{"image": image, "height": image.shape[-2], "width": image.shape[-1]}]
    with torch.no_grad():
        plain = model(inputs)[0]["sem_seg"]
        tta = TestTimeModel(model, config)(inputs)[0]["sem_seg"]
    return plain, tta


# ---- the three required properties ----------------------------------------------------------------------------


@pytest.mark.parametrize("window", [(64, 64), (96, 128)])
def test_window_at_least_the_image_equals_whole_image_inference(tiny_run, window):
    """One window covering the image is whole-image inference (the real trained Mask2Former, panoptic model).
    A window larger than the image shrinks to it: padding the image up to the window would change the result."""
    model = load_model(tiny_run).model
    image = torch.as_tensor(read_image(str(val_images(tiny_run)[0])).transpose(2, 0, 1).copy())
    assert tuple(image.shape[-2:]) == (64, 64)
    inputs = [{"image": image, "height": 64, "width": 64}]
    config = {"mode": "slide", "window": list(window), "stride": [32, 32]}
    with torch.no_grad():
        whole = model(inputs)[0]
        slid = TestTimeModel(model, config)(inputs)[0]
    assert window_grid((64, 64), window, (32, 32)) == [(0, 0, 64, 64)]
    torch.testing.assert_close(slid["sem_seg"], whole["sem_seg"], rtol=0, atol=1e-6)
    assert torch.equal(slid["panoptic_seg"][0], whole["panoptic_seg"][0])  # instance/panoptic: one whole pass
    # and sliding really is different when the windows are smaller than the image
    with torch.no_grad():
        small = TestTimeModel(model, {"mode": "slide", "window": [32, 32], "stride": [16, 16]})(inputs)[0]
    assert (small["sem_seg"] - whole["sem_seg"]).abs().max() > 1e-3


def test_flip_tta_of_a_mirror_symmetric_input_equals_one_pass():
    """For a flip-equivariant model (per-pixel), the mirrored pass of a mirror-symmetric image, flipped back, is the
    plain pass itself, so flip-TTA changes nothing."""
    half = _random_image(24, 20)
    image = torch.cat([half, half.flip(-1)], dim=-1)  # mirror-symmetric, 24 x 40
    assert torch.equal(image, image.flip(-1))
    plain, tta = _plain_and_tta(PerPixelSegmentor(), image, {"flip": True})
    torch.testing.assert_close(tta, plain, rtol=0, atol=1e-7)


def test_blended_overlapping_windows_of_a_constant_model_are_that_constant():
    constant = torch.tensor([0.25, 1.5, -3.0])
    calls = []

    def constant_fn(images):
        calls.append([tuple(im.shape[-2:]) for im in images])
        return [constant[:, None, None].expand(3, *im.shape[-2:]).clone() for im in images]

    image = _random_image(100, 150)
    out = sliding_window_semantic(constant_fn, image, window=(40, 64), stride=(25, 30), window_batch=3)
    torch.testing.assert_close(out, constant[:, None, None].expand(3, 100, 150), rtol=0, atol=1e-6)
    windows = [s for call in calls for s in call]
    assert len(windows) == 4 * 4 and set(windows) == {(40, 64)}  # overlapping windows, all full size
    assert max(len(c) for c in calls) == 3  # window_batch


# ---- what makes those tests meaningful ------------------------------------------------------------------------


def test_flip_tta_of_a_model_that_is_not_mirror_symmetric_averages_the_mirrored_pass():
    """The same symmetric input through a model with a horizontal ramp: TTA is (S + flip(S)) / 2, not S."""
    half = _random_image(24, 20, seed=1)
    image = torch.cat([half, half.flip(-1)], dim=-1)
    plain, tta = _plain_and_tta(PerPixelSegmentor(ramp=3.0), image, {"flip": True})
    torch.testing.assert_close(tta, (plain + plain.flip(-1)) / 2, rtol=0, atol=1e-6)
    assert (tta - plain).abs().max() > 1e-2


def test_flip_tta_of_an_equivariant_model_equals_one_pass_on_any_image():
    """Catches a mirrored pass that is not flipped back (only a symmetric input would hide that)."""
    plain, tta = _plain_and_tta(PerPixelSegmentor(), _random_image(30, 45, seed=2), {"flip": True})
    torch.testing.assert_close(tta, plain, rtol=0, atol=1e-6)


def test_sliding_windows_of_a_per_pixel_model_equal_its_whole_image_scores():
    """Each window is placed where it was cut from: overlaps agree, so the blend equals the whole-image scores."""
    model = PerPixelSegmentor()
    image = _random_image(70, 90, seed=3)
    with torch.no_grad():
        whole = model([{"image": image}])[0]["sem_seg"]
        slid = TestTimeModel(model, {"mode": "slide", "window": [32, 48], "stride": [19, 21]})(
            [{"image": image, "height": 70, "width": 90}])[0]["sem_seg"]
    torch.testing.assert_close(slid, whole, rtol=0, atol=1e-6)


def test_multi_scale_tta_returns_the_output_size_and_averages_the_scales():
    model = PerPixelSegmentor()
    flat = torch.full((3, 20, 30), 77, dtype=torch.uint8)  # constant colour: every scale gives the same scores
    with torch.no_grad():
        one = model([{"image": flat}])[0]["sem_seg"]
        config = TestTimeConfig(scales=(0.5, 1.0, 1.5), flip=True)
        out = TestTimeModel(model, config)([{"image": flat, "height": 40, "width": 60}])[0]["sem_seg"]
    assert out.shape == (4, 40, 60)
    torch.testing.assert_close(out, one[:, :1, :1].expand(4, 40, 60), rtol=0, atol=1e-6)
    textured = _random_image(20, 30, seed=4)
    fn_calls: list[tuple[int, int]] = []

    def fn(images):
        fn_calls.extend(tuple(im.shape[-2:]) for im in images)
        return [model([{"image": im}])[0]["sem_seg"] for im in images]

    augmented_semantic(fn, textured, (20, 30), config)
    assert fn_calls == [(10, 15), (10, 15), (20, 30), (20, 30), (30, 45), (30, 45)]


def test_window_grid_covers_every_pixel_and_ends_at_the_border():
    boxes = window_grid((100, 150), (40, 64), (25, 30))
    cover = torch.zeros(100, 150, dtype=torch.int64)
    for y0, x0, y1, x1 in boxes:
        assert (y1 - y0, x1 - x0) == (40, 64) and y1 <= 100 and x1 <= 150
        cover[y0:y1, x0:x1] += 1
    assert cover.min() >= 1
    assert max(b[2] for b in boxes) == 100 and max(b[3] for b in boxes) == 150
    assert window_grid((30, 50), (64, 64), (10, 10)) == [(0, 0, 30, 50)]


def test_test_time_config_validation_and_defaults():
    with pytest.raises(ValueError, match="larger than the window"):
        TestTimeConfig(mode="slide", window=(32, 32), stride=(40, 16))
    with pytest.raises(ValueError, match="not one of"):
        TestTimeConfig(mode="tiles")
    with pytest.raises(ValueError, match="unknown test_time keys"):
        TestTimeConfig.from_any({"mode": "slide", "windw": [1, 2]})
    with pytest.raises(ValueError, match="needs test_time.window"):
        TestTimeConfig(mode="slide").with_defaults(None)
    filled = TestTimeConfig(mode="slide").with_defaults([512, 1024])
    assert filled.window == (512, 1024) and filled.stride == (341, 682)
    assert TestTimeConfig.from_any(None).is_plain and not TestTimeConfig(flip=True).is_plain


def test_slide_on_a_model_without_semantic_output_is_refused():
    model = PerPixelSegmentor()
    model.semantic_on = False
    with pytest.raises(ValueError, match="semantic_on=false"):
        TestTimeModel(model, {"flip": True})([{"image": _random_image(8, 8)}])


@pytest.mark.parametrize("name", ["whole", "slide", "tta"])
def test_every_test_time_node_composes_into_the_train_config(name, tmp_path):
    from omegaconf import OmegaConf

    from tests.inference.helpers import compose_tiny

    cfg = compose_tiny(tmp_path / "run", f"test_time={name}")
    config = TestTimeConfig.from_any(OmegaConf.to_container(cfg.test_time)).with_defaults([64, 64])
    assert config.mode == ("slide" if name == "slide" else "whole")
    assert config.is_plain == (name == "whole")
    assert (config.flip, len(config.scales)) == ((True, 6) if name == "tta" else (False, 1))
