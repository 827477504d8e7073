"""PGD (Madry et al. 2018) in the L-inf or L2 ball: `steps` steps of step_size along the gradient's sign
(L-inf) or unit direction (L2), each projected back onto the ball and [0, 1]; a seeded random start by
default, optional restarts. Targeted or not. The primitive itself (also used by training and evaluation) is
backend.attacks.projectedgradient_loop."""
from __future__ import annotations

from backend.attacks import gradient_loop
from backend.attacks.common import eps_param, steps_param
from backend.attacks.registry import Attack, Param, Variant, register
from backend.attacks.spec import MAX_STEPS

STEP_MENU = {"linf": tuple(k / 255 for k in (0.25, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 6.0, 8.0)),
             "l2": (0.01, 0.02, 0.05, 0.1, 0.2, 0.5)}


def resolve(values: dict, norm: str) -> dict:
    # PGD's 2.5*eps/steps lets a walk from any start reach the far side of the ball.
    if values["step_size"] is None:
        values["step_size"] = 2.5 * values["eps"] / max(values["steps"], 1)
    return values


ATTACK = register(Attack(
    name="pgd", label="PGD", order=20, targeted=True, curve=True,
    variants=(Variant("linf", "PGD, L-inf",
                      "Projected gradient descent: many small signed steps, each projected back into the eps-box."),
              Variant("l2", "PGD, L2",
                      "PGD in the L2 ball: steps along the normalised gradient; eps is the Euclidean budget.")),
    params=(eps_param("linf"), eps_param("l2"),
            steps_param("pgd", default=10, lo=0, hi=MAX_STEPS, large_default=5),
            *gradient_loop.step_size_params(STEP_MENU),
            Param("random_start", "Random start", kind="bool", default=True, key="rs",
                  help="Start from a random point in the eps-ball instead of the image itself."),
            gradient_loop.restarts_param()),
    run=gradient_loop.run, resolve=resolve, check=gradient_loop.check_restarts, doc=__doc__))
