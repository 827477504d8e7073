"""Invariants of backend.attacks on tiny CPU models.

Most tests use `easy_model`: a width-16 ResNet-18 trained in a couple of seconds on a separable task
(the class is the colour channel with the brightest mean, 16x16 images), so attacks have real
margins to break and targeted attacks have learnt classes to reach.
"""
from __future__ import annotations

import threading

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from backend.attacks import (
    LIMITS,
    MAX_BATCH,
    AttackResult,
    AttackSpec,
    accuracy_under_attack,
    robustness_curve,
    run_attack,
    sanity_checks,
)
from backend.core.models import build_model, freeze


def channel_task(n: int, seed: int, size: int = 16):
    """(x, y): x (n,3,size,size) in [0,1] with channel y (0..2) brighter by 0.2 on average."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 3, (n,), generator=g)
    x = 0.3 + 0.4 * torch.rand(n, 3, size, size, generator=g)
    x[torch.arange(n), y] += 0.2
    return x.clamp(0, 1), y


@pytest.fixture(scope="module")
def easy_weights() -> dict:
    """State dict of the easy model, trained once per module (a few seconds)."""
    torch.manual_seed(0)
    model = build_model("resnet18", width=16, num_classes=10)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for i in range(45):  # 30 sufficed from PyTorch's default conv init; the source's Kaiming init needs more
        x, y = channel_task(64, seed=100 + i)
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _easy(weights: dict, frozen: bool = True) -> nn.Module:
    model = build_model("resnet18", width=16, num_classes=10)
    model.load_state_dict(weights)
    model.eval()
    return freeze(model) if frozen else model


@pytest.fixture(scope="module")
def easy_model(easy_weights):
    return _easy(easy_weights)


@pytest.fixture(scope="module")
def easy_data():
    return channel_task(16, seed=7)


def test_easy_model_learnt_the_task(easy_model, easy_data):
    x, y = easy_data
    with torch.no_grad():
        assert (easy_model(x).argmax(1) == y).float().mean() >= 0.9


CONTRACT_SPECS = [
    AttackSpec(method="fgsm"),
    AttackSpec(method="fgsm", random_start=True, restarts=2),
    AttackSpec(method="pgd", steps=3),
    AttackSpec(method="pgd", eps=0.1, steps=3, restarts=3),
    AttackSpec(method="pgd", norm="l2", eps=1.0, steps=3),
    AttackSpec(method="pgd", eps=0.2, steps=3, targeted=True, target_class=1),
    AttackSpec(method="cw", steps=10, c=5.0),
    AttackSpec(method="cw", steps=10, c=5.0, eps=0.3),
    AttackSpec(method="cw", steps=10, targeted=True, target_class=2),
    AttackSpec(method="deepfool", steps=5),
    AttackSpec(method="deepfool", steps=5, eps=0.2),
]


def _check_contract(model, x, y, spec: AttackSpec, res: AttackResult):
    n = x.shape[0]
    assert isinstance(res, AttackResult) and res.spec == spec
    assert res.x_adv.shape == x.shape and res.x_adv.dtype == torch.float32 and not res.x_adv.requires_grad
    assert res.x_adv.min() >= 0 and res.x_adv.max() <= 1
    delta = (res.x_adv - x).flatten(1)
    torch.testing.assert_close(res.linf, delta.abs().amax(1))
    torch.testing.assert_close(res.l2, delta.norm(dim=1))
    if spec.eps > 0 or spec.method not in ("cw", "deepfool"):  # cw/deepfool with eps 0 are unbounded
        bound = res.linf if spec.norm == "linf" else res.l2
        assert (bound <= spec.eps + 1e-6).all(), (bound.max(), spec.eps)
    for name in ("success", "linf", "l2", "iterations", "pred_clean", "pred_adv"):
        assert getattr(res, name).shape == (n,), name
    assert res.success.dtype == torch.bool and res.iterations.dtype == torch.long
    assert (res.iterations >= 0).all() and (res.iterations <= spec.steps * spec.restarts).all()
    with torch.no_grad():
        torch.testing.assert_close(res.logits_clean, model(x), rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(res.logits_adv, model(res.x_adv), rtol=1e-4, atol=1e-4)
    assert torch.equal(res.pred_adv, res.logits_adv.argmax(1))
    want = res.pred_adv == res.target if spec.targeted else res.pred_adv != y
    assert torch.equal(res.success, want)


@pytest.mark.parametrize("spec", CONTRACT_SPECS, ids=lambda s: f"{s.method}-{s.norm}-{s.eps:.3g}-t{int(s.targeted)}")
@pytest.mark.parametrize("which", ["easy", "tiny"])
def test_every_attack_keeps_the_contract(spec, which, easy_model, easy_data, tiny_model, tiny_batch):
    model, (x, y) = (easy_model, easy_data) if which == "easy" else (tiny_model, tiny_batch)
    x_before, y_before = x.clone(), y.clone()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    res = run_attack(model, x, y, spec)
    _check_contract(model, x, y, spec, res)
    assert torch.equal(x, x_before) and torch.equal(y, y_before)
    assert not model.training and all(m.training is False for m in model.modules())
    assert all(p.grad is None for p in model.parameters())
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())


def test_unfrozen_eval_model_gets_no_parameter_gradients(easy_weights, easy_data):
    model = _easy(easy_weights, frozen=False)  # eval mode, but parameters still require grad
    x, y = easy_data
    for spec in (AttackSpec(steps=2), AttackSpec(method="cw", steps=3), AttackSpec(method="deepfool", steps=2)):
        run_attack(model, x[:4], y[:4], spec)
        assert all(p.grad is None for p in model.parameters()), spec.method


def test_train_mode_model_is_refused(easy_data):
    model = build_model("resnet18", width=16)  # a fresh model is in train mode
    with pytest.raises(ValueError, match="train mode"):
        run_attack(model, *easy_data, AttackSpec(steps=1))


@pytest.mark.parametrize("method", ["pgd", "fgsm"])
def test_robust_accuracy_le_clean_and_attack_breaks_the_easy_model(method, easy_model, easy_data):
    x, y = easy_data
    for eps in (8 / 255, 0.15):
        spec = AttackSpec(method=method, eps=eps, steps=None if method == "fgsm" else 5)
        res = run_attack(easy_model, x, y, spec)
        clean = (res.pred_clean == y).float().mean()
        robust = (res.pred_adv == y).float().mean()
        assert robust <= clean
        acc = accuracy_under_attack(easy_model, x, y, spec, batch_size=5)  # 4 chunks, last one short
        assert acc == pytest.approx(((res.pred_clean == y) & (res.pred_adv == y)).float().mean().item())
    assert clean >= 0.9 and robust <= (0.2 if method == "pgd" else 0.5)  # eps 0.15 ~ the channel margin


def test_fgsm_matches_the_signed_gradient_formula(easy_model, easy_data):
    x, y = easy_data
    xg = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(F.cross_entropy(easy_model(xg), y), xg)
    want = (x + 0.05 * g.sign()).clamp(0, 1)
    res = run_attack(easy_model, x, y, AttackSpec(method="fgsm", eps=0.05))
    torch.testing.assert_close(res.x_adv, want, rtol=0, atol=1e-6)


def test_pgd_matches_torchattacks_without_random_start(easy_model, easy_data):
    torchattacks = pytest.importorskip("torchattacks")
    x, y = easy_data
    ref = torchattacks.PGD(easy_model, eps=8 / 255, alpha=2 / 255, steps=5, random_start=False)(x, y)
    res = run_attack(easy_model, x, y, AttackSpec(eps=8 / 255, step_size=2 / 255, steps=5, random_start=False))
    assert ((res.x_adv - ref).abs() > 1e-6).float().mean() < 1e-3  # a rare tie in grad.sign() may differ


def test_targeted_pgd_reaches_the_target(easy_model, easy_data):
    x, y = easy_data
    target = (y + 1) % 3
    res = run_attack(easy_model, x, y, AttackSpec(eps=0.3, steps=20, targeted=True), target=target)
    assert torch.equal(res.target, target)
    assert res.success.float().mean() >= 0.9
    one = run_attack(easy_model, x, y, AttackSpec(eps=0.3, steps=20, targeted=True, target_class=2))
    assert (one.pred_adv == 2).float().mean() >= 0.9


@pytest.mark.parametrize("spec", [AttackSpec(steps=4, random_start=False), AttackSpec(steps=4, seed=3),
                                  AttackSpec(norm="l2", eps=1.0, steps=4, restarts=2),
                                  AttackSpec(method="cw", steps=12, c=5.0), AttackSpec(method="deepfool", steps=5)],
                         ids=["pgd", "pgd-rs", "pgd-l2-restarts", "cw", "deepfool"])
def test_batch_result_equals_per_example_result(spec, easy_model, easy_data):
    x, y = easy_data
    x, y = x[:6], y[:6]
    batch = run_attack(easy_model, x, y, spec)
    for i in range(len(x)):
        one = run_attack(easy_model, x[i:i + 1], y[i:i + 1], spec)
        torch.testing.assert_close(one.x_adv[0], batch.x_adv[i], rtol=0, atol=1e-5)
        assert one.iterations[0] == batch.iterations[i]


def test_random_start_is_seeded(easy_model, easy_data):
    x, y = easy_data
    a = run_attack(easy_model, x, y, AttackSpec(eps=0.05, steps=1, seed=1)).x_adv
    b = run_attack(easy_model, x, y, AttackSpec(eps=0.05, steps=1, seed=1)).x_adv
    c = run_attack(easy_model, x, y, AttackSpec(eps=0.05, steps=1, seed=2)).x_adv
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_restarts_are_never_worse_than_one_run(easy_model, easy_data):
    x, y = easy_data
    one = run_attack(easy_model, x, y, AttackSpec(eps=0.07, steps=2))
    many = run_attack(easy_model, x, y, AttackSpec(eps=0.07, steps=2, restarts=4))
    assert (many.success | ~one.success).all()  # every example broken once stays broken
    both_failed = ~one.success & ~many.success
    loss_one = F.cross_entropy(one.logits_adv, y, reduction="none")
    loss_many = F.cross_entropy(many.logits_adv, y, reduction="none")
    assert (loss_many[both_failed] >= loss_one[both_failed] - 1e-5).all()
    assert (many.iterations[one.success] == 2).all()  # a first-restart success runs no more restarts
    assert 0 < int(one.success.sum()) < len(y)  # eps 0.07 leaves both kinds, so both checks bite


def test_deepfool_matches_torchattacks_where_one_step_suffices(easy_model, easy_data):
    torchattacks = pytest.importorskip("torchattacks")
    x, y = easy_data
    x, y = x[:6], y[:6]
    res = run_attack(easy_model, x, y, AttackSpec(method="deepfool", steps=50))
    ref = torchattacks.DeepFool(easy_model, steps=50, overshoot=0.02)(x, y)
    assert res.success.all() and (res.iterations >= 1).all()
    # torchattacks applies the overshoot at every step rather than to the accumulated step (as the
    # DeepFool reference does), so the two agree only where one step suffices.
    one = res.iterations == 1
    assert one.sum() >= 3
    torch.testing.assert_close(res.l2[one], (ref - x).flatten(1).norm(dim=1)[one], rtol=1e-3, atol=1e-4)


def test_deepfool_is_exact_on_an_affine_classifier():
    torch.manual_seed(0)
    model = freeze(nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 10)))
    x = 0.4 + 0.2 * torch.rand(8, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        y = model(x).argmax(1)
    w, b = model[1].weight, model[1].bias
    f = x.flatten(1) @ w.T + b                                   # (8, 10)
    dw = (w[None] - w[y][:, None]).norm(dim=2)                   # (8, 10) ||w_k - w_y||
    gap = (f - f.gather(1, y[:, None])).abs() / dw.clamp_min(1e-12)
    gap[torch.arange(8), y] = float("inf")
    k = gap.argmin(1)
    want = 1.02 * (gap.min(1).values + 1e-4 / dw[torch.arange(8), k])  # distance to the nearest boundary
    res = run_attack(model, x, y, AttackSpec(method="deepfool", steps=10, overshoot=0.02))
    assert res.success.all() and (res.iterations == 1).all()
    assert float(res.x_adv.min()) > 0 and float(res.x_adv.max()) < 1  # no clipping, so the formula is exact
    torch.testing.assert_close(res.l2, want, rtol=1e-4, atol=1e-5)
    assert torch.equal(res.pred_adv, k)


def test_cw_finds_small_successful_perturbations(easy_model, easy_data):
    x, y = easy_data
    free = run_attack(easy_model, x, y, AttackSpec(method="cw", steps=50, c=5.0))
    assert free.success.float().mean() >= 0.9
    pgd_l2 = run_attack(easy_model, x, y, AttackSpec(norm="l2", eps=free.l2.max().item(), steps=10))
    assert pgd_l2.success.float().mean() >= free.success.float().mean() - 0.25  # same ballpark
    capped = run_attack(easy_model, x, y, AttackSpec(method="cw", steps=50, c=5.0, eps=0.5))
    assert (capped.l2 <= 0.5 + 1e-6).all()


def test_autoattack_smoke(easy_model, easy_data):
    pytest.importorskip("torchattacks")
    x, y = easy_data
    x, y = x[:2], y[:2]
    rng = torch.get_rng_state()
    spec = AttackSpec(method="autoattack", eps=0.15, steps=5)
    res = run_attack(easy_model, x, y, spec)
    _check_contract(easy_model, x, y, spec, res)
    assert torch.equal(torch.get_rng_state(), rng)  # torchattacks' reseeding did not leak out
    assert (res.pred_adv == y).float().mean() <= (res.pred_clean == y).float().mean()
    assert all(p.grad is None for p in easy_model.parameters()) and not easy_model.training


def test_autoattack_reaches_fab_and_square_on_channels_last_input(tiny_model, monkeypatch):
    """Regression: with a budget too small to flip anything, every AutoAttack stage runs, FAB
    included (it once crashed on channels-last input gradients); the result is still the clean one."""
    torchattacks = pytest.importorskip("torchattacks")
    from backend.attacks.methods import autoattack

    monkeypatch.setattr(autoattack, "SQUARE_QUERIES", 20)  # the stage order matters here, not its budget
    ran = []
    for cls in (torchattacks.APGD, torchattacks.APGDT, torchattacks.FAB, torchattacks.Square):
        orig = cls.forward
        monkeypatch.setattr(cls, "forward",
                            lambda self, *a, _o=orig, _n=cls.__name__, **k: ran.append(_n) or _o(self, *a, **k))
    g = torch.Generator().manual_seed(3)
    x = torch.rand(3, 3, 32, 32, generator=g).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        y = tiny_model(x).argmax(1)
    res = run_attack(tiny_model, x, y, AttackSpec(method="autoattack", eps=1e-4, steps=3))
    assert [n for n in ("APGD", "APGDT", "FAB", "Square") if n in ran] == ["APGD", "APGDT", "FAB", "Square"]
    assert not res.success.any() and torch.equal(res.pred_adv, y)
    assert float((res.x_adv - x).abs().max()) <= 1e-4 + 1e-7


BAD_SPECS = [
    ({"method": "jsma"}, "'jsma'"),
    ({"norm": "l1"}, "'l1'"),
    ({"method": "fgsm", "norm": "l2"}, "'l2'"),
    ({"method": "cw", "norm": "linf"}, "'linf'"),
    ({"eps": 0.7}, "0.7"),
    ({"eps": -0.1}, "-0.1"),
    ({"norm": "l2", "eps": 25.0}, "25.0"),
    ({"eps": float("nan")}, "nan"),
    ({"steps": 501}, "501"),
    ({"steps": -1}, "-1"),
    ({"steps": 2.5}, "2.5"),
    ({"method": "fgsm", "steps": 5}, "5"),
    ({"method": "cw", "steps": 1001}, "1001"),
    ({"restarts": 11}, "11"),
    ({"restarts": 0}, "0"),
    ({"restarts": 3, "random_start": False}, "restarts=3"),
    ({"target_class": 3}, "target_class=3"),
    ({"targeted": True, "target_class": -1}, "-1"),
    ({"method": "deepfool", "targeted": True}, "deepfool"),
    ({"method": "cw", "step_size": 0.1}, "0.1"),
    ({"method": "cw", "c": 0}, "0"),
    ({"random_start": "yes"}, "'yes'"),
    ({"method": "autoattack", "eps": 0.0}, "0.0"),
]


@pytest.mark.parametrize("bad,shown", BAD_SPECS, ids=[str(b) for b, _ in BAD_SPECS])
def test_bad_specs_raise_value_error_naming_the_value(bad, shown):
    with pytest.raises(ValueError) as e:
        AttackSpec.from_dict(bad)
    assert shown in str(e.value)


def test_spec_dict_round_trip_defaults_and_limits():
    with pytest.raises(ValueError, match="'epsilon'"):
        AttackSpec.from_dict({"epsilon": 0.1})
    for spec in CONTRACT_SPECS + [AttackSpec(method="autoattack", norm="l2")]:
        assert AttackSpec.from_dict(spec.to_dict()) == spec
    pgd = AttackSpec()
    assert (pgd.norm, pgd.steps, pgd.random_start) == ("linf", 10, True)
    assert pgd.eps == pytest.approx(8 / 255) and pgd.step_size == pytest.approx(2.5 * pgd.eps / 10)
    assert (AttackSpec(method="cw").norm, AttackSpec(method="cw").eps) == ("l2", 0.0)
    assert AttackSpec(norm="l2").eps == 0.5
    with pytest.raises(ValueError, match="target_class must be in \\[0, 9\\], got 10"):
        AttackSpec(targeted=True, target_class=10).validate(10)
    assert LIMITS["max_batch"] == MAX_BATCH and LIMITS["max_steps"] >= 100
    with pytest.raises(TypeError):
        LIMITS["max_batch"] = 10**6  # read-only for the UI and server


def test_run_attack_rejects_bad_inputs(easy_model, easy_data):
    x, y = easy_data
    spec = AttackSpec(steps=1)
    cases = [
        (lambda: run_attack(easy_model, x * 2, y, spec), "got values in"),
        (lambda: run_attack(easy_model, x[:, :1], y, spec), r"\(16, 1, 16, 16\)"),
        (lambda: run_attack(easy_model, torch.zeros(MAX_BATCH + 1, 3, 4, 4), torch.zeros(MAX_BATCH + 1).long(), spec),
         str(MAX_BATCH + 1)),
        (lambda: run_attack(easy_model, x, y[:3], spec), r"\(3,\)"),
        (lambda: run_attack(easy_model, x, y + 20, spec), r"y must be in \[0, 9\], got values in \[20"),
        (lambda: run_attack(easy_model, x, y, AttackSpec(steps=1, targeted=True)), "target"),
        (lambda: run_attack(easy_model, x, y, AttackSpec(steps=1, targeted=True), target=12), "12"),
        (lambda: run_attack(easy_model, x, y, spec, target=1), "untargeted"),
        (lambda: run_attack(easy_model, x, y, {"method": "pgd"}), "AttackSpec"),
        (lambda: accuracy_under_attack(easy_model, x, y, spec, batch_size=0), "batch_size"),
    ]
    for call, shown in cases:
        with pytest.raises(ValueError, match=shown):
            call()


def test_sanity_checks(easy_model, easy_data, tiny_model, tiny_batch):
    x, y = easy_data
    assert sanity_checks(easy_model, x, y) == []

    class Wrap(nn.Module):
        def __init__(self, inner, fn):
            super().__init__()
            self.inner, self.fn = inner, fn

        def forward(self, z):
            return self.fn(self.inner, z)

    probs = Wrap(easy_model, lambda m, z: m(z).softmax(1)).eval()
    assert any("probabilities" in w for w in sanity_checks(probs, x, y))
    masked = Wrap(easy_model, lambda m, z: m(torch.round(z * 255) / 255)).eval()  # round: zero gradient
    assert any("zero input gradient" in w for w in sanity_checks(masked, x, y))
    noisy = Wrap(easy_model, lambda m, z: m(z) + torch.randn(z.shape[0], 10)).eval()
    assert any("forward passes differ" in w for w in sanity_checks(noisy, x, y))
    assert any("chance" in w for w in sanity_checks(tiny_model, *tiny_batch))  # untrained
    assert all(m.training is False for m in easy_model.modules())


def test_robustness_curve_pgd_and_deepfool(easy_model, easy_data):
    x, y = easy_data
    calls = []
    curve = robustness_curve(easy_model, x, y, "pgd", [0.0, 8 / 255, 0.15], steps=5,
                             progress=lambda d, t: calls.append((d, t)), batch_size=8)
    clean = accuracy_under_attack(easy_model, x, y, AttackSpec(eps=0.0, steps=0))
    assert [c["eps"] for c in curve] == pytest.approx([0.0, 8 / 255, 0.15])
    assert curve[0]["accuracy"] == clean and curve[2]["accuracy"] <= curve[0]["accuracy"]
    assert calls == [(i, 6) for i in range(1, 7)]
    stop_after = iter([False, False, True])  # 2 batches = the first eps point, then stop
    part = robustness_curve(easy_model, x, y, "pgd", [0.0, 0.1], steps=2, batch_size=8,
                            should_stop=lambda: next(stop_after))
    assert len(part) == 1 and part[0]["accuracy"] == clean
    df = robustness_curve(easy_model, x, y, "deepfool", [0.0, 1.0, 50.0 / 3], steps=20)
    accs = [c["accuracy"] for c in df]
    assert accs[0] == clean and accs == sorted(accs, reverse=True) and accs[2] == 0.0


def test_concurrent_attacks_on_one_model_match_sequential(easy_model, easy_data):
    x, y = easy_data
    specs = [AttackSpec(steps=3), AttackSpec(method="deepfool", steps=5)]
    seq = [run_attack(easy_model, x, y, s).x_adv for s in specs]
    out, errors = [None, None], []

    def work(i):
        try:
            out[i] = run_attack(easy_model, x, y, specs[i]).x_adv
        except Exception as e:  # surfaced below; a thread's exception would otherwise vanish
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    for a, b in zip(seq, out):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


def test_works_inside_inference_mode(easy_model, easy_data):
    x, y = easy_data
    want = run_attack(easy_model, x, y, AttackSpec(steps=2)).x_adv
    with torch.inference_mode():
        got = run_attack(easy_model, x.clone(), y.clone(), AttackSpec(steps=2)).x_adv
    torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_pgd_primitive_solves_linear_objectives_exactly():
    from backend.attacks.projected_gradient import pgd
    x = 0.2 + 0.6 * torch.rand(2, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    # L-inf: ascending sum(x) ends at the upper corner of the box [x - eps, x + eps] n [0, 1];
    # descending ends at the lower one (the autograd gradient here is an expanded view).
    up = pgd(lambda xa: xa.flatten(1).sum(1), x, 0.1, 0.04, 3, "linf", rand_init=False)
    torch.testing.assert_close(up, (x + 0.1).clamp(0, 1))
    down = pgd(lambda xa: xa.flatten(1).sum(1), x, 0.1, 0.04, 3, "linf", rand_init=False, maximize=False)
    torch.testing.assert_close(down, (x - 0.1).clamp(0, 1))
    # L2: ascending <d, x> moves eps along d / ||d|| (the box is far enough not to clip).
    d = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(1))
    l2 = pgd(lambda xa: (xa * d).flatten(1).sum(1), x, 0.1, 0.04, 5, "l2", rand_init=False)
    want = x + 0.1 * d / d.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    torch.testing.assert_close(l2, want, rtol=0, atol=1e-6)
