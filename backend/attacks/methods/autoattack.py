"""AutoAttack 'standard' (Croce & Hein 2020) from torchattacks' components: APGD-CE, APGD-T, FAB-T and
Square, untargeted, in the L-inf or L2 ball. Slow (minutes per hundred images on a CPU): for evaluation,
not offered in the app's menus."""
from __future__ import annotations

from contextlib import contextmanager

import torch
import torch.nn as nn

from backend.attacks.common import eps_param, forward, steps_param
from backend.attacks.projected_gradient import project
from backend.attacks.registry import Attack, Variant, register
from backend.attacks.spec import MAX_STEPS

SQUARE_QUERIES = 5000  # AutoAttack 'standard' budget for the black-box Square attack


@contextmanager
def _param_grads_restored(model: nn.Module):
    """torchattacks' FAB calls .backward(), which would accumulate .grad on trainable parameters of
    an unfrozen model; put every .grad back as it was. A frozen model has nothing to save."""
    saved = [(p, None if p.grad is None else p.grad.clone()) for p in model.parameters() if p.requires_grad]
    try:
        yield
    finally:
        for p, g in saved:
            p.grad = g


def run(model, x, y, t, spec):
    """AutoAttack 'standard' (APGD-CE, APGD-T, FAB-T, Square with 5000 queries; 9 target classes) built
    from torchattacks' components with spec.steps iterations (torchattacks.AutoAttack itself fixes
    10; the reference uses 100, our default). Untargeted, eps-ball of spec.norm. SLOW: minutes per
    hundred images on CPU; meant for evaluation. torchattacks reseeds the global RNG, so the caller's
    RNG state is saved and restored around it. iterations = spec.steps for every example."""
    import torchattacks  # lazy: the training path must not need it

    nm = {"linf": "Linf", "l2": "L2"}[spec.norm]
    with torch.no_grad():
        n_cls = min(forward(model, x[:1]).shape[1], 10)  # n_classes - 1 = number of target classes
    common = dict(norm=nm, eps=spec.eps, seed=spec.seed, n_restarts=1)
    atk = torchattacks.MultiAttack([
        torchattacks.APGD(model, steps=spec.steps, loss="ce", **common),
        torchattacks.APGDT(model, steps=spec.steps, n_classes=n_cls, **common),
        torchattacks.FAB(model, steps=spec.steps, multi_targeted=True, n_classes=n_cls, **common),
        torchattacks.Square(model, n_queries=SQUARE_QUERIES, **common),
    ])
    # torchattacks' Attack.__call__ calls model.eval(): a no-op on our eval-mode (frozen) models,
    # and run_attack refuses models in train mode, so it never flips a shared model's mode.
    devices = [x.device] if x.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices), _param_grads_restored(model):
        # contiguous NCHW: FAB reshapes input gradients with .view(), which fails on channels-last ones
        x_adv = atk(x.contiguous(), y).detach().to(x.device)
    x_adv = project(x_adv, x, spec.eps, spec.norm)  # guards the float round-off of the sub-attacks
    return x_adv, torch.full((x.shape[0],), spec.steps, dtype=torch.long, device=x.device), None, None


ATTACK = register(Attack(
    name="autoattack", label="AutoAttack", order=90, interactive=False,
    variants=(Variant("linf", "AutoAttack, L-inf", "APGD-CE, APGD-T, FAB-T and Square (slow)."),
              Variant("l2", "AutoAttack, L2", "APGD-CE, APGD-T, FAB-T and Square in the L2 ball (slow).")),
    params=(eps_param("linf", lo_open=True), eps_param("l2", lo_open=True),
            steps_param("autoattack", default=100, lo=1, hi=MAX_STEPS)),
    run=run, doc=__doc__))
