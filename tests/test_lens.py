"""The Feature lens's targeted attack (backend.explain.lens.targeted_lens) in both norms and the
service's validation of its budget: images stay in the ball and in [0, 1], the probability path is the
target's softmax probability after each step, bad norms / budgets are ValueErrors naming the value."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from backend.core.models import build_model
from backend.explain import lens
from tests.helpers import tiny_checkpoint_root  # noqa: F401 (fixture)
from tests.test_service_contract import client, clients  # noqa: F401 (fixtures: both transports)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model("resnet18", 16).eval().requires_grad_(False)


@pytest.mark.parametrize("norm,eps", [("l2", 6.0), ("l2", 0.5), ("linf", 16 / 255)])
def test_lens_stays_in_the_ball_and_the_image_range(model, norm, eps):
    g = torch.Generator().manual_seed(1)
    x = torch.rand((2, 3, 32, 32), generator=g)
    xa, path = lens.targeted_lens(model, x, 3, eps, 12, norm)
    d = (xa - x).flatten(1)
    size = d.norm(dim=1) if norm == "l2" else d.abs().amax(dim=1)
    assert (size <= eps + 1e-4).all() and size.max() > 0.5 * eps  # reaches far into the ball, never outside
    assert xa.min() >= 0 and xa.max() <= 1
    assert len(path) == 13 and all(len(p) == 2 for p in path)
    with torch.no_grad():
        p0 = torch.softmax(model(x), 1)[:, 3]
        p_end = torch.softmax(model(xa), 1)[:, 3]
    assert np.allclose(path[0], p0.numpy(), atol=1e-5) and np.allclose(path[-1], p_end.numpy(), atol=1e-5)
    assert (p_end > p0).all()  # toward the class


def test_lens_step_rule_reaches_the_edge():
    assert lens.lens_step(6.0, 60) == pytest.approx(0.25)
    assert lens.lens_step(6.0, 60) * 60 >= 2 * 6.0  # room to turn after reaching the edge


def test_lens_rejects_an_unknown_norm(model):
    with pytest.raises(ValueError, match="norm must be one of"):
        lens.targeted_lens(model, torch.zeros(1, 3, 32, 32), 0, 1.0, 2, "l1")


def test_service_lens_l2_budget_and_path(client):  # noqa: F811
    out = client.feature_lens("samples:0", 5, ["tiny-ce"], eps=3.0, steps=5, norm="l2")
    r = out["tiny-ce"]
    clean = client.get_image("samples:0")["pixels"].astype(np.float32) / 255
    assert np.linalg.norm((r["pixels"] - clean).ravel()) <= 3.0 + 1e-3
    assert r["pixels"].min() >= 0 and r["pixels"].max() <= 1
    assert np.asarray(r["path"]).shape == (6,) and abs(float(r["path"][-1]) - r["target_prob"]) < 1e-4
    dflt = client.feature_lens("samples:0", 5, ["tiny-ce"], steps=2, norm="l2")["tiny-ce"]  # the measured default
    assert np.linalg.norm((dflt["pixels"] - clean).ravel()) <= lens.LENS_DEFAULTS["eps"]["l2"] + 1e-3
    lim = client.limits()["lens"]
    assert lim["norms"] == ["linf", "l2"] and lim["defaults"]["norm"] == "l2" and lim["eps_l2"] == [0.1, 20.0]


@pytest.mark.parametrize("kwargs,match", [
    ({"norm": "l1"}, "norm must be one of linf, l2, got 'l1'"),
    ({"norm": "l2", "eps": 25.0}, r"eps must be in \[0.1000, 20.0000\] for norm l2, got 25.0"),
    ({"norm": "l2", "eps": 0.01}, r"eps must be in \[0.1000, 20.0000\] for norm l2"),
    ({"norm": "linf", "eps": 3.0}, r"eps must be in \[0.0039, 0.1255\] \(1/255..32/255\) for norm linf, got 3.0"),
    ({"norm": "l2", "eps": True}, "eps"),  # HTTP: the schema names body.eps
])
def test_service_lens_validates_norm_and_eps(client, kwargs, match):  # noqa: F811
    with pytest.raises(ValueError, match=match):
        client.feature_lens("samples:0", 5, ["tiny-ce"], steps=2, **kwargs)


def test_measure_budgets_summarises_the_lens_per_budget(model):
    g = torch.Generator().manual_seed(2)
    x = torch.rand((2, 3, 32, 32), generator=g)
    images: list = []
    recs = lens.measure_budgets(model, x, [3, 5], [("l2", 6.0), ("linf", 16 / 255)], 8, collect=images)
    assert [(r["norm"], r["eps"], r["n"]) for r in recs] == [("l2", 6.0, 2), ("linf", 16 / 255, 2)]
    for r, xa in zip(recs, images):
        assert xa.shape == x.shape and len(r["path"]) == 9 and 0 <= r["hit"] <= 2
        assert r["p_start"] == r["path"][0] and r["p_end"] == r["path"][-1] and r["p_end"] > r["p_start"]
        # the path is the mean over images of targeted_lens's own path, one image at a time as the app runs it
        _, p3 = lens.targeted_lens(model, x[:1], 3, r["eps"], 8, r["norm"])
        _, p5 = lens.targeted_lens(model, x[1:], 5, r["eps"], 8, r["norm"])
        assert np.allclose(r["path"], [(a[0] + b[0]) / 2 for a, b in zip(p3, p5)], atol=1e-4)
        size = (xa - x).flatten(1).norm(dim=1).mean().item()
        assert r["l2"] == pytest.approx(size, abs=1e-3)
    with pytest.raises(ValueError, match="one target per image"):
        lens.measure_budgets(model, x, [3], [("l2", 6.0)], 2)
