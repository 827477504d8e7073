"""FGSM (Goodfellow et al. 2015): one signed-gradient step of size eps, L-inf; with a random start it is
FGSM-RS (Wong et al. 2020), stepping 1.25*eps from a uniform point of the ball. Targeted or not."""
from __future__ import annotations

from backend.attacks import gradient_loop
from backend.attacks.common import eps_param, steps_param
from backend.attacks.registry import Attack, Param, Variant, register


def resolve(values: dict, norm: str) -> dict:
    if values["step_size"] is None:
        values["step_size"] = 1.25 * values["eps"] if values["random_start"] else values["eps"]
    return values


ATTACK = register(Attack(
    name="fgsm", label="FGSM", order=10, targeted=True, curve=True,
    variants=(Variant("linf", "FGSM (one step, L-inf)",
                      "One signed-gradient step of size eps: the fastest attack, and the weakest."),),
    params=(eps_param("linf"),
            steps_param("fgsm", default=1, lo=1, hi=1, shown=False),
            *[p for p in gradient_loop.step_size_params(shown=False) if p.norm == "linf"],
            Param("random_start", "Random start", kind="bool", default=False, key="fgsm_rs", shown=False),
            gradient_loop.restarts_param()),
    run=gradient_loop.run, resolve=resolve, check=gradient_loop.check_restarts, doc=__doc__))
