"""Vanilla gradient saliency (Simonyan et al. 2014): the input gradient of the target logit."""
from __future__ import annotations

from backend.explain.saliency_registry import SaliencyMethod, register


def compute(model, inp, tgt, params):
    from captum.attr import Saliency

    return Saliency(model).attribute(inp, target=tgt, abs=False)


METHOD = register(SaliencyMethod(
    "gradient", "Gradient", order=10, default_on=True, compute=compute,
    info="How much each pixel would change the class score if nudged: the raw input gradient."))
