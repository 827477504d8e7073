"""The loop FGSM and PGD (backend/attacks/methods/fgsm.py, pgd.py) share: signed-gradient (L-inf) or
normalised-gradient (L2) ascent inside the eps-ball, with per-image seeded random starts and restarts;
plus the parameters both declare."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from backend.attacks.common import ascent_loss, forward, is_success, random_starts
from backend.attacks.projected_gradient import pgd
from backend.attacks.registry import Param
from backend.attacks.spec import MAX_EPS, MAX_RESTARTS


def restarts_param() -> Param:
    return Param("restarts", "Restarts", kind="int", default=1, lo=1, hi=MAX_RESTARTS, step=1, key="restarts",
                 shown=False, help="Random restarts (needs a random start); per example the first success is kept.")


def step_size_params(options: dict | None = None, shown: bool = True) -> tuple[Param, ...]:
    """step_size per norm, "auto" by default (resolve() computes it); options: {norm: menu values}."""
    options = options or {}
    return tuple(Param("step_size", "Step size" + (" (k/255)" if norm == "linf" else ""), default=None, lo=0.0,
                       hi=MAX_EPS[norm], options=tuple(options.get(norm, ())), norm=norm,
                       unit="1/255" if norm == "linf" else "", key=f"step_{norm}", shown=shown,
                       help="auto = 2.5 * eps / steps, enough to cross the whole ball.")
                 for norm in ("linf", "l2"))


def check_restarts(values: dict) -> None:
    if values["restarts"] > 1 and not values["random_start"]:
        raise ValueError(f"restarts={values['restarts']} needs random_start=True "
                         "(without it every restart is identical)")


def run(model, x, y, t, spec):
    """FGSM / PGD. Maximises CE to y (untargeted) or minimises CE to t (targeted) inside the
    eps-ball of spec.norm intersected with [0, 1]; fgsm is one step of spec.step_size (= eps unless
    random_start). Reads eps, step_size, steps, random_start, restarts, seed. iterations = steps x
    restarts run on that example (restarts stop per example at the first success)."""
    labels = t if spec.targeted else y
    steps = spec.steps
    n = x.shape[0]
    best_x, iters = x.clone(), torch.zeros(n, dtype=torch.long, device=x.device)
    best_loss = torch.full((n,), -math.inf, device=x.device)
    best_ok = torch.zeros(n, dtype=torch.bool, device=x.device)
    todo = torch.arange(n, device=x.device)
    best_logits = None
    for r in range(spec.restarts):
        xs, ls = x[todo], labels[todo]
        x0 = random_starts(xs, spec.eps, spec.norm, spec.seed, r) if spec.random_start and spec.eps > 0 else None
        first: list = []
        xa = pgd(ascent_loss(model, ls, spec.targeted, first), xs, spec.eps, spec.step_size, steps,
                 spec.norm, rand_init=False, x_init=x0)
        if spec.restarts == 1:  # nothing to choose between: skip a forward pass (run_attack does one)
            return xa, iters + steps, None, first[0] if x0 is None and first else None
        with torch.no_grad():
            logits = forward(model, xa)
            sign = -1.0 if spec.targeted else 1.0
            loss = sign * F.cross_entropy(logits, ls, reduction="none")
            ok = is_success(logits.argmax(1), ls, spec.targeted)
        iters[todo] += steps
        better = (ok & ~best_ok[todo]) | ((ok == best_ok[todo]) & (loss > best_loss[todo]))
        sel = todo[better]
        if best_logits is None:
            best_logits = logits.new_zeros(n, logits.shape[1])
        best_x[sel], best_loss[sel], best_ok[sel] = xa[better], loss[better], ok[better]
        best_logits[sel] = logits[better]
        todo = todo[~best_ok[todo]]
        if todo.numel() == 0:
            break
    return best_x, iters, best_logits, None
