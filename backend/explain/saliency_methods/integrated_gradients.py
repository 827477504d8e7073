"""Integrated Gradients (Sundararajan et al. 2017) from a baseline image (black, blur or mean)."""
from __future__ import annotations

from backend.explain.saliency import CHUNK, baseline_images
from backend.explain.saliency_registry import SaliencyMethod, register


def compute(model, inp, tgt, params):
    from captum.attr import IntegratedGradients

    n = inp.shape[0]
    per_pass = max(2, CHUNK // n)  # integration points per forward pass
    return IntegratedGradients(model).attribute(
        inp, baselines=baseline_images(inp.detach(), params.baseline), target=tgt,
        n_steps=params.ig_steps, internal_batch_size=n * per_pass)


METHOD = register(SaliencyMethod(
    "integrated_gradients", "Integrated Gradients", order=20, default_on=True, large_default_on=False, compute=compute,
    params=("ig_steps", "baseline"), baseline=True,
    info="Gradients averaged along a straight path from a baseline image to the input, "
         "times the difference; the attributions add up to the score change."))
