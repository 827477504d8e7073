"""Adversarial attacks behind one contract, one module per attack, listed once in a registry.

Contract (torchattacks-like): images x are float (N, 3, H, W) in [0, 1], labels y are int64 (N,),
eps and step sizes are in pixel units (write 8/255 for L-inf, 0.5 for L2). `run_attack(model, x, y,
spec)` returns an `AttackResult`. The model is a shared, frozen, eval-mode module that returns logits:
nothing here switches its mode, writes its parameters or leaves gradients on them, and gradients
are taken with respect to inputs only, so one model may be attacked from several threads at once.

Rooms: spec (AttackSpec, AttackResult, shared bounds), registry (the list of attacks; how to add one
is at its top), common (what the attack modules share), gradient_loop (FGSM's and PGD's loop),
methods/ (FGSM, PGD L-inf/L2, C&W-L2, DeepFool, AutoAttack: one module each, found by the registry),
projected_gradient (the PGD primitive training and evaluation use too), runner (run_attack,
accuracy_under_attack, robustness_curve), sanity (sanity_checks). Every attack documents what it
optimises, the meaning of eps, which spec fields it reads, and what `iterations` counts.
"""
from __future__ import annotations

from backend.attacks import registry  # its first read imports backend/attacks/methods/, one module per attack
from backend.attacks.registry import Attack, Param, Variant, register, unregister
from backend.attacks.runner import accuracy_under_attack, robustness_curve, run_attack
from backend.attacks.sanity import sanity_checks
from backend.attacks.spec import (
    DEFAULT_BATCH,
    LIMITS,
    MAX_BATCH,
    MAX_CW_STEPS,
    MAX_EPS,
    MAX_RESTARTS,
    MAX_STEPS,
    NORMS,
    AttackResult,
    AttackSpec,
)

__all__ = ["Attack", "AttackResult", "AttackSpec", "DEFAULT_BATCH", "LIMITS", "MAX_BATCH", "MAX_CW_STEPS",
           "MAX_EPS", "MAX_RESTARTS", "MAX_STEPS", "METHODS", "NORMS", "Param", "Variant", "accuracy_under_attack",
           "describe", "register", "registry", "robustness_curve", "run_attack", "sanity_checks", "unregister"]


def describe() -> dict:
    """Everything the UI needs about the attacks (served by the service's limits()["attack"]): the
    shared bounds, the registered names ("methods", menu order), the norms, the default method
    (AttackSpec's), and per attack its label, variants (menu key, norm, label, help), parameters
    (range, default, step, control) and flags."""
    return {**dict(LIMITS), "methods": list(registry.names()), "norms": list(NORMS),
            "large_input_px": registry.LARGE_INPUT_PX,
            "default": AttackSpec.__dataclass_fields__["method"].default, "attacks": registry.describe()}


def __getattr__(name: str):
    if name == "METHODS":  # the registered attacks now, not a copy taken at import
        return registry.names()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
