"""DeepFool-L2 (Moosavi-Dezfooli et al. 2016), batched: step to the nearest linearised decision boundary
until the label changes; a minimal-perturbation attack (no budget: it reports the norm it needed;
eps > 0 caps it). Untargeted."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from backend.attacks.common import eps_param, forward, steps_param
from backend.attacks.projected_gradient import project
from backend.attacks.registry import Attack, Param, Variant, register
from backend.attacks.spec import MAX_STEPS

CANDIDATES = 10  # the label plus the 9 most likely other classes, as in DeepFool's reference code


def run(model, x, y, t, spec):
    """DeepFool-L2, batched: per example, linearise the classifier around x_adv, step to the nearest
    linearised boundary between the label y and its 9 most likely rivals (the clean logits choose
    them), accumulate the steps r, and set x_adv = clip(x + (1 + overshoot) * r). Examples stop as
    soon as they are misclassified (already misclassified ones take 0 steps). Unbounded; eps > 0
    projects onto the L2 ball of radius eps. Reads steps, overshoot, eps. iterations = linearisation
    steps taken per example."""
    n = x.shape[0]
    with torch.no_grad():
        logits0 = forward(model, x)
    k = min(CANDIDATES, logits0.shape[1]) - 1
    rivals = logits0.masked_fill(F.one_hot(y, logits0.shape[1]).bool(), -math.inf).topk(k, dim=1).indices
    r_tot, x_adv = torch.zeros_like(x), x.clone()
    iters = torch.zeros(n, dtype=torch.long, device=x.device)
    active = logits0.argmax(1) == y
    for it in range(spec.steps + 1):  # the last pass only checks whether the final step succeeded
        idx = active.nonzero().squeeze(1)
        if idx.numel() == 0:
            break
        xa = x_adv[idx].requires_grad_(True)
        logits = forward(model, xa)
        still = logits.argmax(1) == y[idx]
        active[idx[~still]] = False
        if it == spec.steps or not still.any():
            break
        f = logits.gather(1, rivals[idx]) - logits.gather(1, y[idx, None])  # (n, k), < 0 while y wins
        grads = [torch.autograd.grad(f[:, j].sum(), xa, retain_graph=j < k - 1)[0] for j in range(k)]
        with torch.no_grad():
            w = torch.stack(grads, 1)                      # (n, k, 3, H, W)
            wn = w.flatten(2).norm(dim=2)                  # (n, k)
            fa = f.detach().abs()
            j = (fa / wn.clamp_min(1e-12)).argmin(1)       # nearest linearised boundary
            rows = torch.arange(idx.numel(), device=x.device)
            scale = (fa[rows, j] + 1e-4) / wn[rows, j].pow(2).clamp_min(1e-12)
            r = scale.view(-1, 1, 1, 1) * w[rows, j]
            sel = idx[still]
            r_tot[sel] += r[still]
            iters[sel] += 1
            x_adv[sel] = (x[sel] + (1 + spec.overshoot) * r_tot[sel]).clamp(0, 1)
    if spec.eps > 0:
        x_adv = project(x_adv, x, spec.eps, "l2")
    return x_adv, iters, None, logits0


ATTACK = register(Attack(
    name="deepfool", label="DeepFool", order=40, minimal=True,
    variants=(Variant("l2", "DeepFool (L2, minimal)",
                      "Walks to the nearest linearised decision boundary; reports the L2 norm it needed."),),
    params=(eps_param("l2", default=0.0, shown=False),
            steps_param("deepfool", default=50, lo=1, hi=MAX_STEPS, large_default=20),
            Param("overshoot", "Overshoot", default=0.02, lo=0.0, hi=1.0, step=0.01, key="df_overshoot",
                  help="Final scaling of the accumulated step (1 + overshoot), to land past the boundary.")),
    run=run, doc=__doc__))
