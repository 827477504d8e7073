"""Where RSupCon training must agree with its source (K25n/RSupCon), beyond the loss formula.

The side-by-side run against the authors' code itself is bench/rsupcon_side_by_side.py (it needs
their checkout); these tests pin the facts it established, so that they cannot silently regress.
"""
from __future__ import annotations

import contextlib
import math

import pytest
import torch
import torch.nn as nn

from backend.core.models import build_model
from backend.train.config import make_config
from backend.train.inputs import synthetic_task
from backend.train.losses import rsupcon_terms
from backend.train.methods.rsupcon import loss as loss_rsupcon
from backend.train.steps import Nets, StepContext, TrainNet, rsupcon_step, rsupcon_views


@pytest.mark.parametrize("width", [16, 32])
def test_convolutions_start_from_the_sources_kaiming_fan_out_init(width):
    """The source's ResNet draws every conv N(0, 2 / fan_out) and sets BN to 1 / 0. PyTorch's default
    conv init (what this project used before) is about 2.3x smaller, which under batch norm makes the
    same learning rate take about 5x larger effective steps; the first RSupCon steps then fell onto the
    collapsed solution."""
    torch.manual_seed(0)
    model = build_model("resnet18", width, 10, head=True)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 20  # stem, 16 block convs, 3 shortcuts
    for m in convs:
        fan_out = m.out_channels * m.kernel_size[0] * m.kernel_size[1]
        want = math.sqrt(2.0 / fan_out)
        w = m.weight.detach()
        assert abs(float(w.std()) / want - 1) < 0.15, (m, float(w.std()), want)
        assert abs(float(w.mean())) < 0.1 * want
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            assert torch.equal(m.weight, torch.ones_like(m.weight)) and not m.bias.any()


def _ctx(cfg, seed=0):
    return StepContext(cfg, torch.Generator().manual_seed(seed + 1), torch.Generator().manual_seed(seed + 2),
                       contextlib.nullcontext, lambda: False)


def _nets(cfg, seed=0):
    torch.manual_seed(seed)
    model = build_model("resnet18", cfg.width, 10, head=True)
    core = TrainNet(model)
    return Nets(core, core, core)


def test_rsupcon_step_is_the_training_loss_and_reports_its_parts():
    cfg = make_config("smoke", method="rsupcon", attack_steps=2)
    x, y = synthetic_task(16, seed=3)
    nets = _nets(cfg)
    nets.core.train()
    loss = loss_rsupcon(nets, x, y, _ctx(cfg))
    nets = _nets(cfg)  # fresh: the train-mode forward above moved the BN statistics the attack uses
    nets.core.train()
    ctx = _ctx(cfg)
    out = rsupcon_step(nets, *rsupcon_views(x, ctx), y, ctx)
    assert torch.allclose(out["l_adv"] + out["l_cln"], loss)
    z = out["z"]
    assert z.shape == (3, 16, 128) and torch.allclose(z.norm(dim=2), torch.ones(3, 16), atol=1e-5)
    assert torch.allclose(sum(rsupcon_terms(z[:2], z[2], y)), loss)
    assert all(torch.allclose(a, b) for a, b in zip(rsupcon_terms(z[:2], z[2], y), (out["l_adv"], out["l_cln"])))
    assert out["x_adv"].shape == (32, 3, 32, 32)


def test_rsupcon_attack_starts_from_a_given_point_when_asked():
    """The side-by-side bench feeds the source's own random start; with zero steps the attack must
    return exactly that start (projected), and with steps it stays in the ball around the views."""
    cfg = make_config("smoke", method="rsupcon", attack_steps=0)
    x, y = synthetic_task(8, seed=4)
    nets = _nets(cfg)
    ctx = _ctx(cfg)
    xt, xs, xb = rsupcon_views(x, ctx)
    start = (torch.cat([xt, xs]) + 0.5 * cfg.eps).clamp(0, 1)
    out = rsupcon_step(nets, xt, xs, xb, y, ctx, x_init=start)
    assert torch.equal(out["x_adv"], start)
    cfg3 = make_config("smoke", method="rsupcon", attack_steps=3)
    out = rsupcon_step(nets, xt, xs, xb, y, _ctx(cfg3), x_init=start)
    d = (out["x_adv"] - torch.cat([xt, xs])).abs().amax()
    assert d <= cfg3.eps + 1e-6 and not torch.equal(out["x_adv"], start)


def test_departures_from_the_source_are_named_options_off_by_default():
    """BN in the projection head and another temperature are options (recorded in the card's
    train_config); the defaults are the source's head and its CIFAR-10 script's 0.07."""
    from backend.train.__main__ import parse

    cfg = make_config("full", method="rsupcon")
    assert cfg.head_bn is False and cfg.temperature == 0.07 == cfg.base_temperature
    plain = build_model("resnet18", 16, 10, head=True)
    assert not any(isinstance(m, nn.BatchNorm1d) for m in plain.head)
    bn = build_model("resnet18", 16, 10, head=True, head_bn=True)
    assert [type(m) for m in bn.head] == [nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Linear]
    cfg, _, _ = parse(["--method", "rsupcon", "--out", "/tmp/x-head-bn", "--head-bn", "--temperature", "0.1"])
    assert cfg.head_bn is True and cfg.temperature == 0.1 and cfg.to_dict()["head_bn"] is True
