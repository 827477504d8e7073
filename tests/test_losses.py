"""Losses against a naive per-anchor loop of the formula in shared/docs/RSUPCON.md."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from backend.train.losses import rsupcon_attack_loss, rsupcon_terms, supcon_loss


def naive(anchor, al, contrast, cl, tau=0.07, tau_base=0.07, exclude=None):
    """The formula, one anchor and one pair at a time, in float64."""
    losses = []
    for a in range(anchor.shape[0]):
        comp = [c for c in range(contrast.shape[0]) if exclude is None or not exclude[a, c]]
        pos = [p for p in comp if cl[p] == al[a]]
        if not pos:
            continue
        sims = {c: float(anchor[a].detach().double() @ contrast[c].detach().double()) / tau for c in comp}
        log_denom = math.log(sum(math.exp(s) for s in sims.values()))
        losses.append(-(tau / tau_base) * sum(sims[p] - log_denom for p in pos) / len(pos))
    return sum(losses) / len(losses) if losses else 0.0


def rand_feats(n, d=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(n, d, generator=g), dim=1)


@pytest.mark.parametrize("tau,tau_base", [(0.07, 0.07), (0.5, 0.07), (1.0, 1.0)])
def test_supcon_matches_loop_with_exclusion(tau, tau_base):
    g = torch.Generator().manual_seed(3)
    a, c = rand_feats(7, seed=1), rand_feats(11, seed=2)
    al, cl = torch.randint(0, 3, (7,), generator=g), torch.randint(0, 3, (11,), generator=g)
    ex = torch.rand(7, 11, generator=g) < 0.3
    got = supcon_loss(a, al, c, cl, tau, tau_base, ex)
    assert got.item() == pytest.approx(naive(a, al, c, cl, tau, tau_base, ex), rel=1e-5, abs=1e-5)


def test_anchor_without_positive_is_skipped():
    a, c = rand_feats(3, seed=4), rand_feats(5, seed=5)
    al = torch.tensor([0, 1, 9])  # class 9 has no positive in the contrast set
    cl = torch.tensor([0, 1, 1, 0, 2])
    got = supcon_loss(a, al, c, cl)
    assert got.item() == pytest.approx(naive(a, al, c, cl), rel=1e-5)
    # and excluding an anchor's only positives skips it too
    ex = torch.zeros(3, 5, dtype=torch.bool)
    ex[0, [0, 3]] = True
    got = supcon_loss(a, al, c, cl, exclude=ex)
    assert got.item() == pytest.approx(naive(a, al, c, cl, exclude=ex), rel=1e-5)


def test_all_anchors_skipped_gives_zero_with_grad():
    a = rand_feats(2, seed=6).requires_grad_(True)
    c = rand_feats(3, seed=7)
    loss = supcon_loss(a, torch.tensor([5, 6]), c, torch.tensor([0, 1, 2]))
    assert loss.item() == 0.0
    loss.backward()
    assert a.grad is not None and torch.all(a.grad == 0)


def test_fully_excluded_row_stays_finite():
    a = rand_feats(2, seed=8).requires_grad_(True)
    c = rand_feats(3, seed=9)
    ex = torch.tensor([[True, True, True], [False, False, False]])
    loss = supcon_loss(a, torch.tensor([0, 0]), c, torch.tensor([0, 1, 0]), exclude=ex)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(a.grad).all()
    assert loss.item() == pytest.approx(naive(a, [0, 0], c, [0, 1, 0], exclude=ex), rel=1e-5)


def test_stable_for_large_logits():
    a = rand_feats(4, seed=10)
    loss = supcon_loss(a, torch.tensor([0, 0, 1, 1]), a, torch.tensor([0, 0, 1, 1]), temperature=1e-3,
                       base_temperature=1e-3, exclude=torch.eye(4, dtype=torch.bool))
    assert torch.isfinite(loss)


def test_supcon_special_case_matches_khosla_form():
    """A = C = both views, E(a) = {a}: the usual SupCon over 2B samples."""
    b = 6
    z = rand_feats(2 * b, seed=11)
    y = torch.tensor([0, 1, 0, 2, 1, 0]).repeat(2)
    eye = torch.eye(2 * b, dtype=torch.bool)
    got = supcon_loss(z, y, z, y, exclude=eye)
    # Khosla et al. written directly: mask out self-contrast, average log-prob over positives.
    logits = z @ z.T / 0.07
    logits = logits.masked_fill(eye, float("-inf"))
    logp = logits.log_softmax(dim=1).masked_fill(eye, 0)
    pos = (y[:, None] == y[None, :]) & ~eye
    ref = -((logp * pos).sum(1) / pos.sum(1)).mean()
    assert got.item() == pytest.approx(ref.item(), rel=1e-5)
    assert got.item() == pytest.approx(naive(z, y, z, y, exclude=eye), rel=1e-5)


def test_rsupcon_terms_sum_to_the_naive_loss():
    v, b, d = 2, 5, 8
    z_adv = rand_feats(v * b, d, seed=12).view(v, b, d)
    z_b = rand_feats(b, d, seed=13)
    y = torch.tensor([0, 1, 1, 2, 0])
    flat = z_adv.reshape(v * b, d)
    yv = y.repeat(v)
    contrast = torch.cat([flat, z_b])
    ex = torch.zeros(v * b, v * b + b, dtype=torch.bool)
    for i in range(v * b):
        ex[i, i] = True
    want = naive(flat, yv, contrast, torch.cat([yv, y]), exclude=ex) + naive(z_b, y, flat, yv)
    assert sum(rsupcon_terms(z_adv, z_b, y)).item() == pytest.approx(want, rel=1e-5)


def test_attack_loss_excludes_own_clean_source():
    v, b, d = 2, 4, 8
    z_adv = rand_feats(v * b, d, seed=14).view(v, b, d)
    z_clean = rand_feats(3 * b, d, seed=15).view(3, b, d)
    y = torch.tensor([0, 1, 0, 1])
    per = rsupcon_attack_loss(z_adv, z_clean, y)
    assert per.shape == (v * b,)
    flat_c, yc = z_clean.reshape(3 * b, d), y.repeat(3)
    for k in range(v * b):  # anchor (view k // b, image k % b); its source is clean row k
        ex = torch.zeros(1, 3 * b, dtype=torch.bool)
        ex[0, k] = True
        want = naive(z_adv.reshape(v * b, d)[k:k + 1], y.repeat(v)[k:k + 1], flat_c, yc, exclude=ex)
        assert per[k].item() == pytest.approx(want, rel=1e-5)


def test_bad_shapes_raise():
    a = rand_feats(3)
    with pytest.raises(ValueError, match="exclude"):
        supcon_loss(a, torch.zeros(3, dtype=torch.long), a, torch.zeros(3, dtype=torch.long),
                    exclude=torch.zeros(3, 3))
    with pytest.raises(ValueError, match="z_adv"):
        rsupcon_terms(a, a, torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="temperature"):
        supcon_loss(a, torch.zeros(3, dtype=torch.long), a, torch.zeros(3, dtype=torch.long), 0.0)
