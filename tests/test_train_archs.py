"""Training on any registered architecture (issue 24): one smoke step of every method on every trainable
architecture, the compact FastNet under the model contract, the training options (bf16 on the CPU,
label smoothing, EMA of the weights, the one-cycle schedule) and what the card records about them, and
the cost estimate that counts an architecture's FLOPs instead of reading its width."""
from __future__ import annotations

import contextlib
import json

import pytest
import torch
import torch.nn.functional as F

from backend.core import archs
from backend.core.archs_meta import TRAINABLE
from backend.core.checkpoints import load_checkpoint
from backend.core.flops import forward_flops, reference_flops
from backend.train import RunOptions, make_config, registry, train
from backend.train import state as st
from backend.train.config import config_from_dict
from backend.train.loop import lr_at, model_args
from backend.train.registry import CONTRASTIVE, METHODS
from backend.train.steps import Nets, StepContext, TrainNet

TINY = dict(data="synthetic", subset=16, batch_size=8, val_n=8, val_robust_n=4, ncm_n=16, attack_steps=1,
            probe_epochs=1, probe_batch_size=16)


def test_the_torch_free_list_of_trainable_architectures_is_the_registry_s():
    assert list(TRAINABLE) == archs.trainable() == ["resnet18", "fastnet"]


@pytest.mark.parametrize("arch", TRAINABLE)
@pytest.mark.parametrize("method", METHODS)
def test_one_step_of_every_method_on_every_trainable_architecture(arch, method):
    cfg = make_config("smoke", method=method, arch=arch, width=16, attack_steps=1, batch_size=4)
    torch.manual_seed(0)
    model = archs.build_arch(arch, model_args(cfg, 10, 32), head=method in CONTRASTIVE)
    core = TrainNet(model)
    nets = Nets(core, core, core)
    ctx = StepContext(cfg, torch.Generator().manual_seed(1), torch.Generator().manual_seed(2),
                      contextlib.nullcontext, lambda: False)
    x = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(3))
    y = torch.tensor([0, 1, 0, 1])
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    loss = registry.get(method).loss(nets, x, y, ctx)
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    opt = torch.optim.SGD([p for p in model.parameters() if p.grad is not None], lr=0.1)
    opt.step()
    changed = [k for k, v in model.state_dict().items() if not torch.equal(v, before[k])]
    assert any(k.startswith("stem") or k.startswith("conv1") for k in changed)  # the encoder learns
    assert any(k.startswith("head.") for k in changed) == (method in CONTRASTIVE)


def test_fastnet_meets_the_contract():
    model = archs.build_arch("fastnet", {"width": 16}).eval()
    x = torch.rand(3, 3, 32, 32)
    feats = model.features(x)
    assert feats.shape == (3, model.feature_dim) == (3, 64)
    assert torch.allclose(model.classifier(feats), model(x), atol=1e-6)
    cam = {}
    model.cam_layer.register_forward_hook(lambda m, i, o: cam.update(shape=o.shape))
    model(x)
    assert cam["shape"] == (3, 64, 4, 4)
    assert [n for n, _ in archs.stages(model)] == ["fc", "group3", "group2", "group1", "stem"]
    assert any(isinstance(m, torch.nn.ReLU) for m in model.modules())  # Guided Backprop's hooks find them
    with pytest.raises(ValueError, match="width must be one of"):
        archs.build_arch("fastnet", {"width": 24})


def test_any_contract_model_gets_a_projection_head():
    plain = archs.build_arch("fastnet", {"width": 16}, head=True, head_bn=True)
    assert isinstance(plain.head[1], torch.nn.BatchNorm1d) and plain.head[-1].out_features == 128
    z = F.normalize(plain.head(plain.features(torch.rand(2, 3, 32, 32))), dim=1)
    assert z.shape == (2, 128)


@pytest.mark.parametrize("d, match", [
    ({"arch_args": "[1, 2]"}, "arch_args must be a JSON object"),
    ({"arch_args": "{bad"}, "arch_args must be a JSON object"),
    ({"arch_args": {"width": 16}}, "must not set"),
    ({"arch": ""}, "arch must be"),
    ({"label_smoothing": 1.0}, "label_smoothing must be in"),
    ({"ema": -0.1}, "ema must be in"),
    ({"schedule": "linear"}, "unknown schedule"),
    ({"cpu_bf16": "yes"}, "cpu_bf16 must be true or false"),
])
def test_new_config_fields_are_validated(d, match):
    with pytest.raises(ValueError, match=match):
        config_from_dict({"method": "ce", "preset": "smoke", **d})


def test_an_unknown_architecture_or_argument_fails_before_training(tmp_path):
    opts = RunOptions(out=tmp_path / "m", state_dir=tmp_path / "s", progress_bar=False)
    with pytest.raises(ValueError, match="unknown architecture"):
        train(make_config("smoke", method="ce", arch="nonesuch", **TINY), opts)
    with pytest.raises(ValueError, match="has no arguments"):
        train(make_config("smoke", method="ce", arch="fastnet", arch_args={"depth": 3}, **TINY), opts)
    assert not (tmp_path / "m").exists()


def test_onecycle_schedule_warms_up_then_falls_linearly_to_zero():
    cfg = make_config("smoke", method="ce", epochs=4, lr=0.2, schedule="onecycle", warmup_epochs=1.0)
    assert lr_at(cfg, 0, 10) == pytest.approx(0.02) and lr_at(cfg, 10, 10) == pytest.approx(0.2)
    assert lr_at(cfg, 25, 10) == pytest.approx(0.1) and lr_at(cfg, 39, 10) == pytest.approx(0.2 / 30)


def test_label_smoothing_changes_the_cross_entropy_methods_loss_only():
    x = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([0, 1, 2, 3])

    def loss(method, ls):
        cfg = make_config("smoke", method=method, width=16, attack_steps=1, label_smoothing=ls)
        torch.manual_seed(0)
        core = TrainNet(archs.build_arch("fastnet", model_args(cfg, 10, 32), head=method in CONTRASTIVE).eval())
        ctx = StepContext(cfg, torch.Generator().manual_seed(1), torch.Generator().manual_seed(2),
                          contextlib.nullcontext, lambda: False)
        return float(registry.get(method).loss(Nets(core, core, core), x, y, ctx).detach())
    assert loss("ce", 0.2) != loss("ce", 0.0)
    assert loss("supcon", 0.2) == loss("supcon", 0.0)


def test_fastnet_run_with_every_option_records_them_in_the_card(tmp_path):
    cfg = make_config("smoke", method="rsupcon", arch="fastnet", width=16, cpu_bf16=True, ema=0.9,
                      label_smoothing=0.1, schedule="onecycle", warmup_epochs=0.5, **TINY)
    out = tmp_path / "ckpts" / "fast"
    train(cfg, RunOptions(out=out, state_dir=tmp_path / "state", progress_bar=False, threads=1))
    card = load_checkpoint(out).card
    assert card["arch"] == "fastnet" and card["arch_args"] == {"num_classes": 10, "width": 16, "input_size": 32}
    assert card["display_name"] == "RSupCon FastNet w16 (1 ep)"
    tc = card["train_config"]
    assert (tc["arch"], tc["cpu_bf16"], tc["ema"], tc["label_smoothing"], tc["schedule"]) == \
        ("fastnet", True, 0.9, 0.1, "onecycle")
    tr = card["training"]
    assert tr["precision"] == "bf16 autocast" and tr["threads"] == 1 and tr["cpu_s"] > 0
    assert tr["core_hours"] == pytest.approx(tr["cpu_s"] / 3600, abs=1e-3)
    assert tr["train_attack"] == "PGD-1 on the contrastive loss (RSUPCON.md), linf eps 8/255, step 2/255"
    json.dumps(card)  # plain data


def test_the_checkpoint_holds_the_moving_average_when_ema_is_on(tmp_path):
    """val_n=0: no validation picks a best epoch, so the final weights are the average itself; its
    batch-norm statistics are averaged too, and the average differs from the last step's weights."""
    cfg = make_config("smoke", method="ce", arch="fastnet", width=16, ema=0.5,
                      **{**TINY, "val_n": 0, "val_robust_n": 0})
    train(cfg, RunOptions(out=tmp_path / "m", state_dir=tmp_path / "s", progress_bar=False, threads=1))
    tensors, meta = st.load_state(tmp_path / "s")
    ema = {k[4:]: v for k, v in tensors.items() if k.startswith("ema/")}
    model = {k[6:]: v for k, v in tensors.items() if k.startswith("model/")}
    assert ema and ema.keys() == model.keys()
    # the final state holds the weights written to the checkpoint (the average) under model/
    assert all(torch.equal(ema[k], model[k]) for k in ema)
    plain = make_config("smoke", method="ce", arch="fastnet", width=16, **{**TINY, "val_n": 0, "val_robust_n": 0})
    train(plain, RunOptions(out=tmp_path / "p", state_dir=tmp_path / "sp", progress_bar=False, threads=1))
    last = {k[6:]: v for k, v in st.load_state(tmp_path / "sp")[0].items() if k.startswith("model/")}
    assert not torch.equal(last["fc.weight"], model["fc.weight"])


def test_resume_with_ema_gives_the_same_model(tmp_path):
    from tests.test_train import StopAfter, final_weights

    cfg = make_config("smoke", method="ce", arch="fastnet", width=16, ema=0.8, epochs=2, **TINY)
    train(cfg, RunOptions(out=tmp_path / "a" / "m", state_dir=tmp_path / "sa", progress_bar=False, threads=1))
    opts = RunOptions(out=tmp_path / "b" / "m", state_dir=tmp_path / "sb", progress_bar=False, threads=1,
                      save_every_min=1e-9, resume=True)
    from backend.train.steps import Cancelled
    with pytest.raises(Cancelled):
        train(cfg, opts, should_stop=StopAfter(3))
    train(cfg, opts)
    want, got = final_weights(tmp_path / "sa"), final_weights(tmp_path / "sb")
    assert all(torch.equal(got[k], want[k]) for k in want)


def test_cli_takes_any_registered_architecture(tmp_path):
    """--arch torchvision with --arch-args: a registered architecture that is not on the Train page."""
    from backend.train.__main__ import main

    pytest.importorskip("torchvision")
    out = tmp_path / "tv"
    code = main(["--method", "ce", "--preset", "smoke", "--data", "synthetic", "--subset", "8", "--batch-size", "4",
                 "--val-n", "4", "--val-robust-n", "0", "--arch", "torchvision",
                 "--arch-args", '{"name": "resnet18"}', "--out", str(out), "--state-dir", str(tmp_path / "s"),
                 "--no-progress", "--threads", "1"])
    assert code == 0
    card = load_checkpoint(out).card
    assert card["arch"] == "torchvision" and card["arch_args"]["name"] == "resnet18"
    assert card["arch_args"]["input_size"] == 32 and card["width"] is None


def test_cost_estimate_counts_flops_not_width(tmp_path):
    """A width-64 FastNet was priced like a width-64 ResNet-18 ((64/16)^2 = 16 units) from its card's
    width; now each model costs its counted forward FLOPs over the reference network's."""
    from backend.core.checkpoints import new_card, save_checkpoint
    from backend.service import Service
    from backend.service.budget import estimate_s
    from tests.helpers import CIFAR10_CLASSES, write_tiny_checkpoint

    write_tiny_checkpoint(tmp_path, "r16", width=16)
    write_tiny_checkpoint(tmp_path, "r32", width=32)
    torch.manual_seed(0)
    fast = archs.build_arch("fastnet", {"width": 64}).eval()
    save_checkpoint(fast, new_card("f64", "ce", "fastnet", 64, list(CIFAR10_CLASSES)), tmp_path / "f64")
    svc = Service(checkpoint_root=tmp_path, device="cpu")
    p = {"n": 10, "steps": 5, "source": "samples"}
    cost = {m: estimate_s(svc, "robustness_curve", {**p, "model_ids": [m]}) for m in ("r16", "r32", "f64")}
    assert cost["f64"] / cost["r16"] == pytest.approx(forward_flops(fast) / reference_flops(), rel=1e-6)
    assert 4.0 < cost["f64"] / cost["r16"] < 5.0  # counted; the width rule said 16
    assert 3.5 < cost["r32"] / cost["r16"] < 4.5  # about (32/16)^2, as the width rule said
