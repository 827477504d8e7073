"""Saliency contract: shapes, finiteness, batch == single, any target, shared model untouched."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from backend.explain.saliency import (
    METHOD_INFO,
    METHODS,
    SaliencyParams,
    attribute,
    baseline_images,
    to_heatmap,
)

# Small budgets keep the tests quick; occlusion with an 8-px window and stride gives 16 positions.
FAST = SaliencyParams(ig_steps=8, smoothgrad_samples=4, occlusion_window=8, occlusion_stride=8)

pytestmark = pytest.mark.filterwarnings("ignore:Setting backward hooks on ReLU")


def _hooks(model):
    return [(name, kind) for name, m in model.named_modules()
            for kind in ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")
            if getattr(m, kind)]


@pytest.fixture
def state(tiny_model):
    return {k: v.clone() for k, v in tiny_model.state_dict().items()}


@pytest.mark.parametrize("method", METHODS)
def test_shape_finite_batch_equals_single_model_untouched(method, tiny_model, tiny_batch, state):
    x, y = tiny_batch
    x_before = x.clone()
    attr = attribute(tiny_model, x, y, method, FAST)
    assert attr.shape == x.shape and attr.dtype == torch.float32
    assert torch.isfinite(attr).all() and attr.abs().max() > 0
    single = torch.cat([attribute(tiny_model, x[i:i + 1], y[i:i + 1], method, FAST) for i in range(len(x))])
    scale = attr.abs().max()
    assert torch.allclose(attr, single, atol=1e-4 * float(scale), rtol=1e-3)
    # the shared model and the caller's input are left exactly as they were
    assert not tiny_model.training
    assert all(not p.requires_grad and p.grad is None for p in tiny_model.parameters())
    assert all(torch.equal(v, state[k]) for k, v in tiny_model.state_dict().items())
    assert _hooks(tiny_model) == []
    assert torch.equal(x, x_before) and not x.requires_grad and x.grad is None
    assert method in METHOD_INFO and METHOD_INFO[method]["info"]


@pytest.mark.parametrize("method", METHODS)
def test_non_predicted_target_gives_a_different_map(method, tiny_model, tiny_batch):
    x, _ = tiny_batch
    pred = tiny_model(x).argmax(1)
    other = (pred + 3) % 10
    a = attribute(tiny_model, x, pred, method, FAST)
    b = attribute(tiny_model, x, other, method, FAST)
    assert torch.isfinite(b).all()
    assert not torch.allclose(a, b)


def test_gradient_matches_autograd(tiny_model, tiny_batch):
    x, y = tiny_batch
    xi = x.clone().requires_grad_(True)
    tiny_model(xi).gather(1, y[:, None]).sum().backward()
    assert torch.allclose(attribute(tiny_model, x, y, "gradient"), xi.grad, atol=1e-6)


def test_guided_backprop_hooks_fire(tiny_model, tiny_batch):
    # With ReLUs the hooks cannot see (F.relu), Guided Backprop would equal the plain gradient.
    x, y = tiny_batch
    g = attribute(tiny_model, x, y, "gradient")
    gb = attribute(tiny_model, x, y, "guided_backprop")
    assert (g - gb).abs().max() > 0.1 * g.abs().max()


def test_integrated_gradients_completeness(tiny_model, tiny_batch):
    # IG attributions sum to logit(x) - logit(baseline), up to the quadrature error.
    x, y = tiny_batch
    params = SaliencyParams(ig_steps=64, baseline="blur")
    attr = attribute(tiny_model, x, y, "integrated_gradients", params)
    with torch.no_grad():
        diff = (tiny_model(x) - tiny_model(baseline_images(x, "blur"))).gather(1, y[:, None]).squeeze(1)
    assert torch.allclose(attr.sum(dim=(1, 2, 3)), diff, atol=0.05 * float(diff.abs().max()) + 1e-5)


def test_smoothgrad_is_seeded(tiny_model, tiny_batch):
    x, y = tiny_batch
    a = attribute(tiny_model, x, y, "smoothgrad", FAST)
    torch.manual_seed(123)  # the global RNG must not matter
    assert torch.equal(a, attribute(tiny_model, x, y, "smoothgrad", FAST))
    other = attribute(tiny_model, x, y, "smoothgrad", SaliencyParams(smoothgrad_samples=4, seed=1))
    assert not torch.equal(a, other)


def test_gradcam_is_constant_over_channels(tiny_model, tiny_batch):
    x, y = tiny_batch
    a = attribute(tiny_model, x, y, "gradcam")
    assert torch.equal(a[:, 0], a[:, 1]) and torch.equal(a[:, 0], a[:, 2])


@pytest.mark.parametrize("kind", ["black", "blur", "mean"])
def test_baselines_in_range(kind, tiny_batch):
    x, _ = tiny_batch
    b = baseline_images(x, kind)
    assert b.shape == x.shape and b.min() >= 0 and b.max() <= 1


@pytest.mark.parametrize("method", METHODS)
def test_to_heatmap_range(method, tiny_model, tiny_batch):
    x, y = tiny_batch
    h = to_heatmap(attribute(tiny_model, x, y, method, FAST), method)
    assert h.shape == (4, 32, 32) and h.dtype == np.float32
    assert h.min() >= 0 and h.max() <= 1 and np.isclose(h.max(), 1.0)


def test_to_heatmap_clips_outliers_and_zero_map():
    a = torch.zeros(2, 3, 32, 32)
    a[0, :, 0, 0] = 1000.0  # one huge pixel
    a[0, :, 1:, :] = 1.0
    h = to_heatmap(a, "gradient")
    assert h[0, 5, 5] == pytest.approx(1.0)  # the bulk is not washed out by the outlier
    assert (h[1] == 0).all()                 # an all-zero map stays zero, no NaN
    assert (to_heatmap(-a, "gradcam")[0] == 0).all()  # Grad-CAM keeps positive evidence only


@pytest.mark.parametrize("bad, match", [
    (dict(ig_steps=0), "ig_steps"), (dict(ig_steps=257), "ig_steps"),
    (dict(smoothgrad_samples=65), "smoothgrad_samples"), (dict(smoothgrad_stdev=0.0), "smoothgrad_stdev"),
    (dict(occlusion_window=0), "occlusion_window"), (dict(baseline="white"), "white"),
])
def test_params_validation(bad, match):
    with pytest.raises(ValueError, match=match):
        SaliencyParams(**bad)


def test_input_validation(tiny_model, tiny_batch):
    x, y = tiny_batch
    with pytest.raises(ValueError, match="unknown saliency method 'lime'"):
        attribute(tiny_model, x, y, "lime")
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        attribute(tiny_model, x * 2, y, "gradient")
    with pytest.raises(ValueError, match="target must be in"):
        attribute(tiny_model, x, torch.tensor([0, 1, 2, 10]), "gradient")
    with pytest.raises(ValueError, match="3 entries for 4 images"):
        attribute(tiny_model, x, y[:3], "gradient")
    with pytest.raises(ValueError, match="shape"):
        attribute(tiny_model, x[:, :1], y, "gradient")
    with pytest.raises(ValueError, match="exceed the image size"):
        attribute(tiny_model, x, y, "occlusion", SaliencyParams(occlusion_window=40))


def test_concurrent_calls_do_not_interfere(tiny_model, tiny_batch):
    # Hook-based methods run on a private twin, so a plain gradient computed at the same time on the
    # shared model never passes through Guided Backprop's or Grad-CAM's hooks.
    import threading

    x, y = tiny_batch
    x, y = x[:2], y[:2]
    expected = {m: attribute(tiny_model, x, y, m) for m in ("gradient", "guided_backprop", "gradcam")}
    wrong: list[str] = []

    def run(method):
        for _ in range(8):
            if not torch.allclose(attribute(tiny_model, x, y, method), expected[method], atol=1e-6):
                wrong.append(method)

    threads = [threading.Thread(target=run, args=(m,)) for m in ("gradient", "guided_backprop", "gradcam", "gradient")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert wrong == [] and _hooks(tiny_model) == []
