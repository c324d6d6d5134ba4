"""ProfileSettings validation: each bad value gets an error that names the key and the accepted forms."""

from __future__ import annotations

import pytest

from mgfusion.profiling.settings import ProfileConfigError, ProfileSettings

BASE = {"encoders": ["dinov3_micro16"], "output_dir": "out", "images": "imgs"}


@pytest.mark.parametrize("key,value,match", [
    ("max_images", 0, r"max_images=0 is invalid: give a positive number of images, or max_images=null"),
    ("max_images", -3, r"max_images=-3 is invalid"),
    ("max_images", True, r"max_images=True is invalid"),
    ("resolution", -5, r"resolution=-5 is invalid; accepted forms: resolution=512 .*resolution=\[H,W\]"),
    ("resolution", [0, 0], r"resolution=\[0,0\] is invalid; accepted forms"),
    ("resolution", [64], r"resolution=\[64\] is invalid; accepted forms"),
    ("resolution", [64, 64, 3], r"resolution=\[64,64,3\] is invalid"),
    ("resolution", "big", r"resolution=big is invalid"),
    ("max_size", 0, r"max_size=0 is invalid: expected an integer >= 1 or null"),
    ("batch_size", 0, r"batch_size=0 is invalid"),
    ("min_image_side", 0, r"min_image_side=0 is invalid"),
    ("max_aspect_ratio", 0.5, r"max_aspect_ratio=0.5 is invalid: expected a number >= 1"),
    ("encoders", [], r"encoders=\[\] is invalid: give a non-empty list"),
    ("encoders", ["a", "a"], r"encoders contain duplicates"),
    ("weights", {"dinov3_vitb61": "x.pth"}, r"weights\.dinov3_vitb61 names an encoder that is not profiled"),
    ("imports", "my_mod", r"imports='my_mod' is invalid: give a list of module names"),
    ("fresh", "yes", r"fresh='yes' is invalid: expected true or false"),
    ("encoders", ["student@runs/x"], (r"encoders entry 'student@runs/x' is invalid: expected a registered encoder "
                                      r"name .*PART = master \| auxiliary")),
    ("encoders", ["master@"], r"encoders entry 'master@' is invalid"),
    ("controls", {"nosie": True}, r"unknown controls key\(s\) \['nosie'\]; valid: noise, pixels, random_init"),
    ("controls", {"alpha": 1.5}, r"controls.alpha=1.5 is invalid: expected a significance level in \(0, 1\)"),
    ("controls", {"random_init": "yes"}, r"controls.random_init='yes' is invalid: expected true or false"),
    ("controls", {"noise_channels": [8, 8]}, r"controls.noise_channels=\[8,8\] is invalid: expected auto"),
    ("num_processes", 0, r"num_processes=0 is invalid: expected an integer >= 1 \(processes that share the images"),
    ("dist_url", "localhost:1", r"dist_url='localhost:1' is invalid: expected auto or tcp://HOST:PORT"),
    ("cost_models", "run", r"cost_models='run' is invalid: give a list of training run folders"),
    ("cost_model_resolution", [1024], r"cost_model_resolution=\[1024\] is invalid: expected \[H,W\]"),
])
def test_invalid_values_name_the_key(key, value, match):
    with pytest.raises(ProfileConfigError, match=match):
        ProfileSettings.from_mapping({**BASE, key: value})


def test_valid_forms_and_unknown_keys():
    for res in (None, 512, [64, 96]):
        assert ProfileSettings.from_mapping({**BASE, "resolution": res}).resolution == res
    assert ProfileSettings.from_mapping({**BASE, "max_images": None}).max_images is None
    s = ProfileSettings.from_mapping({**BASE, "controls": {"random_init": True},
                                      "encoders": ["dinov3_micro16", "master@runs/a=1", "auxiliary@runs/a=1/m.pth"]})
    assert s.control("random_init") is True and s.control("noise") is True and s.control("noise_channels") == "auto"
    with pytest.raises(ProfileConfigError, match=r"unknown profile settings \['max_imgs'\]"):
        ProfileSettings.from_mapping({**BASE, "max_imgs": 3})
    with pytest.raises(ProfileConfigError, match="weights.dinov3_micro16=a.pth and encoder_overrides.dinov3_micro16."
                                                 "weights=b.pth disagree"):
        ProfileSettings.from_mapping({**BASE, "weights": {"dinov3_micro16": "a.pth"},
                                      "encoder_overrides": {"dinov3_micro16": {"weights": "b.pth"}}})


def test_package_exports_resolve_lazily():
    from mgfusion import profiling

    assert sorted(profiling.__all__) == sorted(profiling._EXPORTS)
    for name in profiling.__all__:
        assert getattr(profiling, name) is not None
    with pytest.raises(AttributeError, match="has no attribute 'Nope'"):
        profiling.Nope  # noqa: B018


def test_random_init_rule_is_the_registry_flag_and_weights_random_opts_in():
    """One rule with training: encoders registered with requires_weights need weights, `weights.NAME=random` (or
    allow_random_init) asks for random init on purpose; the micro architectures have no released weights."""
    from mgfusion.backbones.registry import requires_weights
    from mgfusion.profiling.entries import needs_weights, registry_entry

    assert needs_weights("dinov3_vits16") and requires_weights("dinov3_vits16")
    assert not needs_weights("dinov3_micro16") and not requires_weights("dinov3_micro16")
    refused = ProfileSettings.from_mapping({**BASE, "encoders": ["dinov3_vits16"]})
    with pytest.raises(ProfileConfigError, match=r"weights\.dinov3_vits16=random"):
        registry_entry("dinov3_vits16", refused)
    asked = ProfileSettings.from_mapping({**BASE, "encoders": ["dinov3_vits16"], "weights": {"dinov3_vits16": "random"}})
    entry = registry_entry("dinov3_vits16", asked)
    assert entry.random_init and entry.weights is None and "weights.dinov3_vits16=random" in entry.description
    micro = registry_entry("dinov3_micro16", ProfileSettings.from_mapping({**BASE, "encoders": ["dinov3_micro16"]}))
    assert micro.random_init and "smoke-test architecture" in micro.description
