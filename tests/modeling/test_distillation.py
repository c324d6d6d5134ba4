"""Auxiliary-free inference by feature distillation: the training loss reaches Mask2Former's loss dict and trains
the projection, and the distilled model never uses the auxiliary encoder at inference."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from detectron2.structures import Instances
from hydra.utils import instantiate
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten

from mgfusion.backbones import FusionBackbone, build_encoder, pop_auxiliary_losses
from mgfusion.modeling.backbone import EncoderBackbone
from tests.engine.helpers import compose_train, micro_fusion_overrides
from tests.modeling.conftest import make_shapes_image


def fusion(**kwargs) -> FusionBackbone:
    torch.manual_seed(0)
    return FusionBackbone(master=build_encoder("dinov3_micro16"), auxiliary=build_encoder("sam2_hiera_micro"),
                          inject={16: "replace"}, **kwargs)


class ParameterUses(TorchFunctionMode):
    """Counts torch calls that receive one of ``params`` (a parameter access counter)."""

    def __init__(self, params) -> None:
        super().__init__()
        self.ids = {id(p) for p in params}
        self.count = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        flat, _ = tree_flatten((args, kwargs or {}))
        self.count += sum(id(a) in self.ids for a in flat)
        return func(*args, **(kwargs or {}))


def _forward_calls(module: nn.Module) -> tuple[list[int], list]:
    calls: list[int] = []
    hooks = [m.register_forward_pre_hook(lambda *_: calls.append(1)) for m in module.modules()]
    return calls, hooks


def test_distilled_inference_never_calls_or_reads_the_auxiliary():
    fb = fusion(distillation={"enabled": True}, inference="distilled").eval()
    x = torch.randn(1, 3, 64, 96)
    for mode, expect_use in (("fused", True), ("distilled", False), ("master_only", False)):
        fb.set_inference(mode)
        calls, hooks = _forward_calls(fb.auxiliary)
        with torch.no_grad(), ParameterUses(fb.auxiliary.parameters()) as uses:
            out = fb(x)
        for h in hooks:
            h.remove()
        assert (len(calls) > 0, uses.count > 0) == (expect_use, expect_use), mode
        assert {s: f.shape[1] for s, f in out.items()} == fb.out_channels


def test_distilled_outputs_do_not_depend_on_the_auxiliary_weights():
    fb = fusion(distillation={"enabled": True}, inference="distilled").eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        distilled = fb(x)
        fused = fb.set_inference("fused")(x)
        for p in fb.auxiliary.parameters():
            p.copy_(torch.randn_like(p))
        fused_random_aux = fb(x)
        distilled_random_aux = fb.set_inference("distilled")(x)
    assert not torch.allclose(fused[16], fused_random_aux[16]), "fused outputs depend on the auxiliary"
    for s in distilled:
        assert torch.equal(distilled[s], distilled_random_aux[s])
    # dropping the auxiliary removes its parameters and keeps the distilled outputs
    n_aux = sum(p.numel() for p in fb.auxiliary.parameters())
    n_before = sum(p.numel() for p in fb.parameters())
    fb.drop_auxiliary()
    assert sum(p.numel() for p in fb.parameters()) == n_before - n_aux
    assert not any(k.startswith("auxiliary.") for k in fb.state_dict())
    with torch.no_grad():
        dropped = fb(x)
    assert all(torch.equal(dropped[s], distilled[s]) for s in distilled)
    with pytest.raises(ValueError, match="fused inference needs it"):
        fb.set_inference("fused")
    with pytest.raises(RuntimeError, match="auxiliary encoder was dropped"):
        fb.train()(x)


def test_master_only_inference_is_the_masters_own_pyramid():
    fb = fusion().eval().set_inference("master_only")
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        out, own = fb(x), fb.master(x)
    assert all(torch.equal(out[s], own[s]) for s in own) and fb.last_injected == ()


def _tiny_maskformer(backbone: nn.Module) -> nn.Module:
    cfg = compose_train("model=mask2former_tiny", "output_dir=/unused", "model.num_classes=3",
                        "model.num_queries=8", "model.semantic_on=true", "model.instance_on=false",
                        "model.panoptic_on=false")
    return instantiate(cfg.model, backbone=EncoderBackbone(encoder=backbone), metadata=None, _convert_="all")


def _batch(n: int = 2, size: int = 64) -> list[dict]:
    rng, batch = np.random.default_rng(0), []
    for _ in range(n):
        image, masks, classes = make_shapes_image(rng, size, size)
        inst = Instances((size, size), gt_classes=torch.as_tensor(classes), gt_masks=torch.as_tensor(masks))
        batch.append({"image": torch.as_tensor(image).permute(2, 0, 1).contiguous(), "instances": inst})
    return batch


@pytest.mark.parametrize("detach", [False, True])
def test_distillation_loss_joins_the_model_losses_and_trains_the_projection(detach):
    fb = fusion(distillation={"enabled": True, "weight": 2.0, "loss": "both", "detach_student": detach})
    level16 = fb.master.neck.proj["16"].weight
    assert level16.requires_grad == (not detach), "the student level trains only when the loss reaches the master"
    model = _tiny_maskformer(fb).train()
    proj = fb.distillation.proj["16"]
    opt = torch.optim.Adam(proj.parameters(), lr=1e-2)
    batch = _batch()
    values = []
    for _ in range(8):
        losses = model(batch)
        assert "loss_distill_s16" in losses and fb.pop_losses() == {}, "collected by the meta-architecture"
        opt.zero_grad()
        model.zero_grad()
        losses["loss_distill_s16"].backward()
        assert proj.weight.grad is not None and proj.weight.grad.abs().sum() > 0
        assert (fb.master.trunk.blocks[-1].mlp.fc2.weight.grad is None) == detach
        opt.step()
        values.append(float(losses["loss_distill_s16"].detach()))
    assert values[-1] < 0.8 * values[0]


def test_distillation_loss_values():
    """loss = weight x (mean(1 - cos) + mean squared error) between the projected master map and the aux map."""
    fb = fusion(distillation={"enabled": True, "weight": 0.5, "loss": "both"})
    x = torch.randn(1, 3, 64, 64)
    fb.train()(x)
    loss = fb.pop_losses()["loss_distill_s16"]
    with torch.no_grad():
        master, aux = fb.master(x)[16], fb.auxiliary(fb.auxiliary_input(x))[16]
        pred = fb.distillation.project(16, master)
        cos = torch.nn.functional.cosine_similarity(pred, aux, dim=1)
        expected = 0.5 * ((1 - cos).mean() + ((pred - aux) ** 2).mean())
    torch.testing.assert_close(loss.detach(), expected, rtol=1e-5, atol=1e-6)


def test_uncollected_losses_and_bad_settings_raise():
    fb = fusion(distillation={"enabled": True}).train()
    fb(torch.randn(1, 3, 32, 32))
    with pytest.raises(RuntimeError, match=r"never collected.*pop_auxiliary_losses\(backbone\)"):
        fb(torch.randn(1, 3, 32, 32))
    assert set(pop_auxiliary_losses(EncoderBackbone(encoder=fb))) == {"loss_distill_s16"}  # the first step's
    fb(torch.randn(1, 3, 32, 32))  # collected: the next step runs
    with pytest.raises(ValueError, match="inference=distilled needs a model trained with feature distillation"):
        fusion(inference="distilled")
    with pytest.raises(ValueError, match=r"inference='ensemble'; valid: fused, master_only, distilled"):
        fusion(inference="ensemble")
    with pytest.raises(ValueError, match=r"loss='l1'; valid: cosine, mse, both"):
        fusion(distillation={"enabled": True, "loss": "l1"})
    with pytest.raises(ValueError, match="cannot be combined with backbone.fusion.dynamic=true"):
        FusionBackbone(master="dinov3_micro16", auxiliary="sam2_hiera_micro", dynamic_stride=True,
                       distillation={"enabled": True})


def test_config_keys_compose_into_a_distilled_backbone():
    cfg = compose_train("backbone=fusion_micro_d3s2", "backbone.distillation.enabled=true",
                        "backbone.distillation.loss=cosine", "backbone.fusion.inference=distilled",
                        "output_dir=/unused")
    fb = instantiate(cfg.backbone, _convert_="all")
    assert fb.inference == "distilled" and fb.distillation.settings.loss == "cosine"
    assert tuple(fb.distillation.proj["16"].weight.shape) == (fb.auxiliary.out_channels[16], fb.master.out_channels[16],
                                                             1, 1)


def test_distillation_trains_through_the_engine_and_records_the_inference_cost(tmp_path):
    """The engine's whole-model cost count (model_cost.json, written before the first step) runs the model in eval
    mode: it must not leave a distillation loss behind for the first training step, and it counts the distilled
    model without the auxiliary."""
    import json

    from mgfusion.engine import build_model, run
    from mgfusion.profiling.cost import model_cost

    out = tmp_path / "distilled"
    cfg = compose_train(*micro_fusion_overrides(out, "backbone.distillation.enabled=true",
                                    "backbone.fusion.inference=distilled", "solver.max_iter=2", "dataset.test=[]"))
    run(cfg)
    assert (out / "model_final.pth").is_file()
    losses = [json.loads(line) for line in (out / "metrics.json").read_text().splitlines()]
    assert any("loss_distill_s16" in row for row in losses)
    cost = json.loads((out / "model_cost.json").read_text())
    fused_cfg = compose_train(*micro_fusion_overrides(tmp_path / "unused", "backbone.distillation.enabled=true",
                                                      "backbone.fusion.inference=fused"))
    fused = model_cost(build_model(fused_cfg, torch.device("cpu")), (1024, 2048))
    assert cost["input"] == fused["input"] == "1024x2048"
    assert 0 < cost["parts"]["backbone"]["GFLOPs"] < fused["parts"]["backbone"]["GFLOPs"]  # no auxiliary call
