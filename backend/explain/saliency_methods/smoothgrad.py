"""SmoothGrad (Smilkov et al. 2017): the input gradient averaged over seeded noisy copies."""
from __future__ import annotations

import torch

from backend.explain.saliency import CHUNK
from backend.explain.saliency_registry import SaliencyMethod, register


def compute(model, inp, tgt, params):
    """Mean input gradient over S noisy copies x + e_s, e_s ~ N(0, stdev^2), unclipped. Captum's
    NoiseTunnel draws its noise from torch's global RNG, which would make maps change between calls,
    make a batch differ from its single images, and cannot be seeded safely from several threads; so
    the noise comes from a private seeded generator, the same S draws for every image, and the
    gradients from captum's Saliency."""
    from captum.attr import Saliency

    sal = Saliency(model)
    n = inp.shape[0]
    s_total = params.smoothgrad_samples
    gen = torch.Generator(device="cpu").manual_seed(params.seed)
    noise = torch.randn((s_total, *inp.shape[1:]), generator=gen) * params.smoothgrad_stdev
    noise = noise.to(inp.device)
    inp = inp.detach()
    total = torch.zeros_like(inp)
    per_pass = max(1, CHUNK // n)
    for s0 in range(0, s_total, per_pass):
        e = noise[s0:s0 + per_pass]  # (k,3,H,W)
        k = e.shape[0]
        noisy = (inp.unsqueeze(0) + e.unsqueeze(1)).reshape(k * n, *inp.shape[1:])  # (k*N,3,H,W)
        noisy.requires_grad_(True)
        g = sal.attribute(noisy, target=tgt.repeat(k), abs=False)
        total += g.reshape(k, *inp.shape).sum(0)
    return total / s_total


METHOD = register(SaliencyMethod(
    "smoothgrad", "SmoothGrad", order=30, default_on=True, large_default_on=False, compute=compute,
    params=("smoothgrad_samples", "smoothgrad_stdev", "seed"),
    info="The gradient averaged over noisy copies of the image, which removes speckle "
         "that is not about the object."))
