"""C&W-L2 (Carlini & Wagner 2017) with a fixed trade-off constant c: Adam in tanh space on the squared L2
size plus c times a margin loss; a minimal-perturbation attack (no budget: it reports the norm it
needed; eps > 0 caps it). Targeted or not."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from backend.attacks.common import eps_param, forward, is_success, steps_param
from backend.attacks.projected_gradient import project
from backend.attacks.registry import Attack, Param, Variant, register
from backend.attacks.spec import MAX_CW_STEPS


def run(model, x, y, t, spec):
    """C&W-L2 with a fixed constant c (no binary search): Adam (lr) in tanh space on
    ||x_adv - x||_2^2 + c * max(margin, -kappa), margin = z_label - max_other (untargeted) or
    max_other - z_target (targeted). Per example it keeps the smallest-L2 successful iterate (else x
    itself, as the reference does: a failure's last Adam iterate is mostly round-off noise) and stops
    early when its loss improved < 0.01% over the last steps/10 steps. C&W is unbounded; eps > 0
    projects the result onto the L2 ball of radius eps (success is then re-measured). Reads c,
    kappa, lr, steps, eps. iterations = Adam steps run on that example."""
    labels = t if spec.targeted else y
    n, b1, b2 = x.shape[0], 0.9, 0.999
    w = torch.atanh((2 * x - 1).clamp(-1 + 1e-6, 1 - 1e-6))  # pixels at exactly 0 or 1 stay finite
    m, v = torch.zeros_like(w), torch.zeros_like(w)
    best_x, best_l2 = x.clone(), torch.full((n,), math.inf, device=x.device)
    found = torch.zeros(n, dtype=torch.bool, device=x.device)
    active = torch.ones(n, dtype=torch.bool, device=x.device)
    prev = torch.full((n,), math.inf, device=x.device)
    iters = torch.zeros(n, dtype=torch.long, device=x.device)
    check = max(spec.steps // 10, 1)
    for step in range(1, spec.steps + 1):
        idx = active.nonzero().squeeze(1)
        if idx.numel() == 0:
            break
        wi = w[idx].requires_grad_(True)
        xa = (torch.tanh(wi) + 1) / 2
        logits = forward(model, xa)
        l2sq = (xa - x[idx]).pow(2).flatten(1).sum(1)
        z_lab = logits.gather(1, labels[idx, None]).squeeze(1)
        z_other = logits.masked_fill(F.one_hot(labels[idx], logits.shape[1]).bool(), -math.inf).amax(1)
        margin = z_other - z_lab if spec.targeted else z_lab - z_other
        loss = l2sq + spec.c * margin.clamp(min=-spec.kappa)
        (g,) = torch.autograd.grad(loss.sum(), wi)
        with torch.no_grad():
            ok = is_success(logits.argmax(1), labels[idx], spec.targeted)
            better = ok & (l2sq < best_l2[idx])
            sel = idx[better]
            best_x[sel], best_l2[sel], found[sel] = xa[better], l2sq[better], True
            iters[idx] += 1
            # Adam by hand so each example keeps its own step count and stops on its own.
            m[idx] = b1 * m[idx] + (1 - b1) * g
            v[idx] = b2 * v[idx] + (1 - b2) * g * g
            tt = iters[idx].to(x.dtype).view(-1, 1, 1, 1)
            step_dir = (m[idx] / (1 - b1 ** tt)) / ((v[idx] / (1 - b2 ** tt)).sqrt() + 1e-8)
            w[idx] = wi.detach() - spec.lr * step_dir
            if (step - 1) % check == 0:  # as the reference: record at the first step, compare every steps/10
                loss = loss.detach()
                stalled = loss > prev[idx] - 1e-4 * prev[idx].abs()
                prev[idx] = loss
                active[idx[stalled]] = False
    if spec.eps > 0:
        best_x = project(best_x, x, spec.eps, "l2")
    return best_x, iters, None, None


ATTACK = register(Attack(
    name="cw", label="C&W", order=30, targeted=True, minimal=True,
    variants=(Variant("l2", "Carlini-Wagner (L2, minimal)",
                      "Finds a small L2 perturbation with Adam on a margin loss; no budget, it reports the norm "
                      "it needed."),),
    params=(eps_param("l2", default=0.0, shown=False),
            steps_param("cw", default=100, lo=1, hi=MAX_CW_STEPS, large_default=30),
            Param("c", "c (trade-off)", default=1.0, lo=0.0, hi=1e4, lo_open=True,
                  options=(0.01, 0.1, 0.3, 1.0, 3.0, 10.0, 100.0), key="cw_c",
                  help="Weight of the misclassification term against the L2 size."),
            Param("kappa", "kappa (confidence)", default=0.0, lo=0.0, hi=1e3, offer=(0.0, 50.0), step=1.0,
                  key="cw_kappa", help="Margin the adversarial class must win by."),
            Param("lr", "Adam learning rate", default=0.01, lo=0.0, hi=1.0, lo_open=True, step=0.001,
                  key="cw_lr", shown=False)),
    run=run, doc=__doc__))
