"""Saliency measures: alignment, deletion/insertion, drift, randomisation sanity check."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn

from backend.explain.saliency import SaliencyParams, baseline_images
from backend.explain.saliency_metrics import (
    alignment_measures,
    deletion_insertion,
    drift,
    gradient_alignment,
    randomisation_check,
)


class LinearPixels(nn.Module):
    """Two-class linear model over the pixels of (N,3,8,8) images: its logit is a sum of
    per-pixel contributions, so the exact importance of every pixel is known."""

    def __init__(self, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.lin = nn.Linear(3 * 8 * 8, 2)
        with torch.no_grad():
            self.lin.weight.copy_(torch.randn(2, 192, generator=g) * 0.3)
            self.lin.bias.zero_()
        self.requires_grad_(False)
        self.eval()

    def forward(self, x):
        return self.lin(x.flatten(1))


@pytest.fixture
def small_images():
    g = torch.Generator().manual_seed(3)
    return torch.rand(5, 3, 8, 8, generator=g)


def test_alignment_range_and_manual(tiny_model, tiny_batch):
    x, y = tiny_batch
    a = gradient_alignment(tiny_model, x, y)
    assert a.shape == (4,) and a.dtype == np.float32 and (a >= 0).all() and (a <= 1).all()
    xi = x[:1].clone().requires_grad_(True)
    tiny_model(xi)[0, y[0]].backward()
    g, v = xi.grad.flatten(), x[0].flatten()
    manual = float((v @ g).abs() / (v.norm() * g.norm()))
    assert a[0] == pytest.approx(manual, rel=1e-4)
    c = (x[0] - x[0].mean(dim=(1, 2), keepdim=True)).flatten()
    centered = float((c @ g).abs() / (c.norm() * g.norm()))
    assert gradient_alignment(tiny_model, x, y, centered=True)[0] == pytest.approx(centered, rel=1e-4)


def test_alignment_default_target_is_prediction(tiny_model, tiny_batch):
    x, _ = tiny_batch
    pred = tiny_model(x).argmax(1)
    both = alignment_measures(tiny_model, x)
    assert np.allclose(both["alignment"], gradient_alignment(tiny_model, x, pred))
    assert set(both) == {"alignment", "centered_alignment"}


def test_alignment_of_a_linear_model_with_its_own_weights():
    # For a linear model the input gradient is the weight row, known without autograd.
    model = LinearPixels()
    g = model.lin.weight[1]
    x = g.clamp(min=0).reshape(1, 3, 8, 8)
    x = x / x.max()  # the positive part of the weights, as an image in [0, 1]
    expected = float((x.flatten() @ g).abs() / (x.norm() * g.norm()))
    assert gradient_alignment(model, x, torch.tensor([1]))[0] == pytest.approx(expected, rel=1e-5)
    assert expected > 0.5  # well aligned by construction


@pytest.mark.parametrize("baseline", ["black", "blur"])
def test_deletion_insertion_endpoints_and_naive_loop(small_images, baseline):
    model, x = LinearPixels(), small_images
    t = torch.tensor([0, 1, 0, 1, 1])
    sal = torch.rand(5, 8, 8, generator=torch.Generator().manual_seed(4))
    steps = 4
    r = deletion_insertion(model, x, t, sal, steps=steps, baseline=baseline)
    assert r["deletion_curve"].shape == (5, steps + 1) == r["insertion_curve"].shape
    with torch.no_grad():
        clean = torch.softmax(model(x), 1)[range(5), t].numpy()
        base_img = baseline_images(x, baseline)
        base = torch.softmax(model(base_img), 1)[range(5), t].numpy()
    assert np.allclose(r["deletion_curve"][:, 0], clean, atol=1e-6)
    assert np.allclose(r["deletion_curve"][:, -1], base, atol=1e-6)
    assert np.allclose(r["insertion_curve"][:, 0], base, atol=1e-6)
    assert np.allclose(r["insertion_curve"][:, -1], clean, atol=1e-6)
    for key in ("deletion_auc", "insertion_auc"):
        assert r[key].shape == (5,) and (r[key] >= 0).all() and (r[key] <= 1).all()
    # a naive loop for step 2 (the top half of the 64 pixels)
    order = torch.argsort(-sal.flatten(1), dim=1, stable=True)[:, :32]
    mask = torch.zeros(5, 64, dtype=torch.bool)
    mask[torch.arange(5)[:, None], order] = True
    mask = mask.view(5, 1, 8, 8)
    with torch.no_grad():
        deleted = torch.softmax(model(torch.where(mask, base_img, x)), 1)[range(5), t].numpy()
        inserted = torch.softmax(model(torch.where(mask, x, base_img)), 1)[range(5), t].numpy()
    assert np.allclose(r["deletion_curve"][:, 2], deleted, atol=1e-6)
    assert np.allclose(r["insertion_curve"][:, 2], inserted, atol=1e-6)
    c = r["deletion_curve"].astype(np.float64)
    expected_auc = sum((c[:, i] + c[:, i + 1]) / 2 / steps for i in range(steps))
    assert np.allclose(r["deletion_auc"], expected_auc, atol=1e-6)


def test_oracle_ranking_beats_random(small_images):
    model, x = LinearPixels(), small_images
    t = torch.ones(5, dtype=torch.long)
    # exact per-pixel contribution of each pixel to logit_1 - logit_0 against a black baseline
    w = (model.lin.weight[1] - model.lin.weight[0]).reshape(3, 8, 8)
    oracle = (x * w).sum(1)                                   # (5, 8, 8)
    rand = torch.rand(5, 8, 8, generator=torch.Generator().manual_seed(9))
    good = deletion_insertion(model, x, t, oracle, steps=16, baseline="black")
    bad = deletion_insertion(model, x, t, rand, steps=16, baseline="black")
    assert (good["deletion_auc"] < bad["deletion_auc"]).all()
    assert (good["insertion_auc"] > bad["insertion_auc"]).all()


def test_deletion_insertion_validation(small_images):
    model, x = LinearPixels(), small_images
    t = torch.zeros(5, dtype=torch.long)
    with pytest.raises(ValueError, match="saliency must have shape"):
        deletion_insertion(model, x, t, torch.rand(5, 4, 4))
    with pytest.raises(ValueError, match="steps"):
        deletion_insertion(model, x, t, torch.rand(5, 8, 8), steps=0)
    with pytest.raises(ValueError, match="'white'"):
        deletion_insertion(model, x, t, torch.rand(5, 8, 8), baseline="white")


def test_drift_identical_reversed_and_partial():
    rng = np.random.default_rng(0)
    a = rng.random((3, 6, 6)).astype(np.float32)
    same = drift(a, a.copy(), k=0.25)
    assert np.allclose(same["spearman"], 1) and np.allclose(same["topk_overlap"], 1)
    rev = drift(a, -a, k=0.25)
    assert np.allclose(rev["spearman"], -1) and np.allclose(rev["topk_overlap"], 0)
    b = a.copy()
    b[0] = rng.random((6, 6))
    mixed = drift(torch.from_numpy(a), torch.from_numpy(b), k=0.25)
    assert mixed["spearman"][1] == pytest.approx(1) and -1 <= mixed["spearman"][0] < 0.9
    # top-k by hand for image 0: 9 of 36 pixels
    ta = set(np.argsort(-a[0].ravel(), kind="stable")[:9])
    tb = set(np.argsort(-b[0].ravel(), kind="stable")[:9])
    assert mixed["topk_overlap"][0] == pytest.approx(len(ta & tb) / 9)


def test_drift_validation_and_constant_map():
    with pytest.raises(ValueError, match="differ in shape"):
        drift(np.zeros((2, 4, 4)), np.zeros((2, 4, 5)))
    with pytest.raises(ValueError, match="k must be"):
        drift(np.zeros((2, 4, 4)), np.zeros((2, 4, 4)), k=0)
    r = drift(np.ones((1, 4, 4)), np.random.default_rng(0).random((1, 4, 4)))
    assert np.isnan(r["spearman"][0])  # undefined, not a made-up number


@pytest.mark.parametrize("method, layers", [("gradient", "cascade"), ("gradcam", "top")])
def test_randomisation_check_leaves_model_untouched(tiny_model, tiny_batch, method, layers):
    x, y = tiny_batch
    before = {k: v.clone() for k, v in tiny_model.state_dict().items()}
    r = randomisation_check(tiny_model, x, y, method, SaliencyParams(), layers=layers)
    assert all(torch.equal(v, before[k]) for k, v in tiny_model.state_dict().items())
    assert not tiny_model.training and all(not p.requires_grad for p in tiny_model.parameters())
    n_stages = 6 if layers == "cascade" else 1
    assert len(r["stages"]) == n_stages and r["spearman"].shape == (n_stages, 4)
    assert (np.abs(r["spearman"]) <= 1).all() and ((r["topk_overlap"] >= 0) & (r["topk_overlap"] <= 1)).all()
    assert r["randomised_heatmaps"].shape == (n_stages, 4, 32, 32)
    # the randomised model really differs: its maps are not the original ones
    assert not np.allclose(r["randomised_heatmaps"][-1], r["original_heatmap"])
    again = randomisation_check(tiny_model, x, y, method, SaliencyParams(), layers=layers)
    assert np.array_equal(again["spearman"], r["spearman"])  # fixed seed


def test_randomisation_check_validation(tiny_model, tiny_batch):
    x, y = tiny_batch
    with pytest.raises(ValueError, match="'all'"):
        randomisation_check(tiny_model, x, y, "gradient", layers="all")
    with pytest.raises(ValueError, match="stages"):
        randomisation_check(LinearPixels(), torch.rand(1, 3, 8, 8), [0], "gradient")
