"""Occlusion (Zeiler & Fergus 2014): the score drop when a baseline-coloured patch covers each place."""
from __future__ import annotations

from backend.explain.saliency import CHUNK, baseline_images
from backend.explain.saliency_registry import SaliencyMethod, register


def compute(model, inp, tgt, params):
    from captum.attr import Occlusion

    n, _, h, w = inp.shape
    win, stride = params.occlusion_window, params.occlusion_stride
    if win > min(h, w) or stride > min(h, w):
        raise ValueError(f"occlusion_window {win} / occlusion_stride {stride} exceed the image size {h}x{w}")
    return Occlusion(model).attribute(
        inp, sliding_window_shapes=(3, win, win), strides=(3, stride, stride),
        baselines=baseline_images(inp.detach(), params.baseline), target=tgt,
        perturbations_per_eval=max(1, CHUNK // n))


METHOD = register(SaliencyMethod(
    "occlusion", "Occlusion", order=60, display="positive", gradients=False, slow=True, compute=compute,
    params=("occlusion_window", "occlusion_stride", "baseline"), baseline=True,
    info="Slide a patch of baseline colour over the image and record how much the class "
         "score drops: slow, but needs no gradients."))
