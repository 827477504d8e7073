"""Guided Backprop (Springenberg et al. 2015): the gradient with negative signals blocked at every ReLU."""
from __future__ import annotations

from backend.explain.saliency import twin
from backend.explain.saliency_registry import SaliencyMethod, register


def compute(model, inp, tgt, params):
    from captum.attr import GuidedBackprop

    return GuidedBackprop(twin(model)).attribute(inp, target=tgt)  # hooks on a per-call twin


METHOD = register(SaliencyMethod(
    "guided_backprop", "Guided Backprop", order=50, compute=compute,
    info="The gradient with negative signals blocked at every ReLU: sharp, edge-like "
         "maps that can look good even for a random model (see the sanity check)."))
