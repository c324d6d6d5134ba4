"""The image value range is declared, never guessed: uint8 = 0..255, float and other integer types state it."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mgfusion.metrics import MetricSuite, compute_metrics, compute_pyramid_metrics


def _case(photos, stride=16):
    photo = photos["astronaut"][..., :256, :384]
    h, w = 256 // stride, 384 // stride
    rgb = F.interpolate(photo.float() / 255, size=(h, w), mode="area")
    gen = torch.Generator().manual_seed(0)
    feats = torch.cat([rgb, F.avg_pool2d(torch.randn(1, 9, h, w, generator=gen), 3, 1, 1)], 1)
    return feats, photo


def test_bicubic_overshoot_on_a_unit_image_is_an_error_naming_the_range(photos):
    feats, photo = _case(photos)
    unit = photo.float() / 255.0
    unit[0, 0, 10, 10] = 1.0001  # one bicubic overshoot: the old guess divided the whole image by 255 (EF 0.0)
    with pytest.raises(ValueError, match=r"values in \[0, 1\.0001\] \(images \[0\]\), outside the declared "
                                         r"range \[0, 1\] \(image_range=1\)"):
        compute_metrics(feats, unit, stride=16, image_range=1.0)
    negative = photo.float() / 255.0
    negative[0, 1, 3, 3] = -0.01
    with pytest.raises(ValueError, match=r"values in \[-0\.01, 1\]"):
        compute_metrics(feats, negative, stride=16, image_range=1.0)
    # round-off within 1e-6 x image_range is accepted and clipped
    rounded = photo.float() / 255.0
    rounded[0, 0, 10, 10] = 1.0 + 5e-7
    assert torch.isfinite(compute_metrics(feats, rounded, stride=16, image_range=1.0)["EF"]).all()


def test_float_images_need_image_range(photos):
    feats, photo = _case(photos)
    with pytest.raises(ValueError, match=r"torch\.float32 images need an explicit value range: pass image_range=1\.0 "
                                         r".*or image_range=255\.0"):
        compute_metrics(feats, photo.float() / 255.0, stride=16)
    with pytest.raises(ValueError, match=r"need an explicit value range"):
        compute_pyramid_metrics({16: feats}, photo.double(), parts=("EF",))
    with pytest.raises(ValueError, match=r"images\[0\]: torch\.float32 images need an explicit value range"):
        compute_metrics(feats, [photo[0].float()], stride=16)
    with pytest.raises(ValueError, match=r"image_range must be a positive finite number"):
        compute_metrics(feats, photo.float(), stride=16, image_range=0)
    # SC alone never looks at the images
    assert "SFC" in compute_metrics(feats, photo.float(), stride=16, parts=("SC",))


def test_unit_float_image_equals_uint8_image_and_uint8_needs_no_keyword(photos):
    feats, photo = _case(photos)
    as_uint8 = compute_metrics(feats, photo, stride=16)  # no keyword needed
    as_unit = compute_metrics(feats, photo.float() / 255.0, stride=16, image_range=1.0)
    as_255 = compute_metrics(feats, photo.double(), stride=16, image_range=255.0)
    explicit = compute_metrics(feats, photo, stride=16, image_range=255)
    for key in as_uint8:
        torch.testing.assert_close(as_unit[key], as_uint8[key], rtol=1e-5, atol=1e-6, msg=key)
        torch.testing.assert_close(as_255[key], as_uint8[key], rtol=1e-5, atol=1e-6, msg=key)
        assert torch.equal(explicit[key], as_uint8[key]), key
    assert as_uint8["EF"].item() > 1.0
    with pytest.raises(ValueError, match=r"uint8 images are 0\.\.255; image_range=1\.0 contradicts"):
        compute_metrics(feats, photo, stride=16, image_range=1.0)


def test_other_integer_types_need_their_range_stated(photos):
    feats, photo = _case(photos)
    wide = photo.to(torch.int32) * 257  # 0..65535, as a 16-bit PNG decodes
    with pytest.raises(ValueError, match=r"torch\.int32 images need an explicit value range: pass "
                                         r"image_range=<the maximum of the scale>, e.g\. 2147483647\.0"):
        compute_metrics(feats, wide, stride=16)
    got = compute_metrics(feats, wide, stride=16, image_range=65535.0)
    want = compute_metrics(feats, photo, stride=16)
    for key in want:
        torch.testing.assert_close(got[key], want[key], rtol=1e-5, atol=1e-6, msg=key)
    with pytest.raises(ValueError, match=r"values in \[0, 65535\].*outside the declared range \[0, 4095\]"):
        compute_metrics(feats, wide, stride=16, image_range=4095.0)


def test_metric_suite_passes_image_range(photos):
    feats, photo = _case(photos)
    suite = MetricSuite(variant="reference", parts=("EF",))
    want = suite(feats, photo, stride=16)
    got = suite(feats, photo.float() / 255.0, stride=16, image_range=1.0)
    pyr = suite.pyramid({16: feats}, photo.float(), image_range=255.0)
    for key in want:
        torch.testing.assert_close(got[key], want[key], rtol=1e-5, atol=1e-6, msg=key)
        torch.testing.assert_close(pyr[16][key], want[key], rtol=1e-5, atol=1e-6, msg=key)
    with pytest.raises(ValueError, match=r"need an explicit value range"):
        suite(feats, photo.float(), stride=16)
