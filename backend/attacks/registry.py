"""The attack registry: the one list of attacks, each with its norms, labels, parameters, ranges and defaults.

How to add an attack (one new module plus its tests; no other file changes):
1. New module backend/attacks/methods/<name>.py (every module there is imported on first use of the
   registry, so it registers itself).
2. run(model, x, y, target, spec) -> (x_adv, iterations, logits_adv or None, logits_clean or None).
3. Params: eps per norm and steps (common.eps_param/steps_param), any others with range/default/step.
4. register(Attack(name, label, variants=(Variant(norm, label, help),), params, run, order=...)).
5. A test: AttackSpec validation, run_attack's contract, and it in limits()["attack"] and the app.

An Attack is pure description plus its run function. AttackSpec (backend.attacks.spec) resolves and
validates a spec from it: a field the attack declares takes the declared default and must lie in the
declared range; a field it does not declare must keep its neutral value; a declared name that is no
AttackSpec field is the attack's own (spec.param(name)). Params with `shown` become controls in the
app. Menus list the variants (attack, norm) of the `interactive` attacks in `order`, cheapest first.
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field
from typing import Any, Callable

from backend.core.registry import Registry

KINDS = ("int", "float", "bool", "choice")


@dataclass(frozen=True)
class Param:
    """One attack parameter: the AttackSpec field `name`, its accepted range and its control.

    default: the value when the spec leaves the field None; None = "auto" (the attack's resolve()
    computes it, e.g. PGD's step size). lo/hi: accepted range (lo_open: lo itself excluded).
    offer: the narrower (lo, hi) the app's control offers (default: the accepted range). step: the
    control's step. options: a menu of values instead of a range (plus "auto" when default is None).
    norm: the norm it belongs to (None: every norm of the attack). unit: "1/255" shows values in k/255.
    key: the control's id in links and saved views (attacks meaning the same thing share one).
    shown: False = accepted in specs but no control in the app.
    large_default: the default for models whose input side is at least LARGE_INPUT_PX (an attack step
    on a 224-px ResNet-50 costs about 10x one on a 32-px ResNet-18: bench/interactive_224.py), so the
    first view of a large model answers in about a second on a CPU; None = `default` at every size.
    """
    name: str
    label: str
    kind: str = "float"
    default: Any = None
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    offer: tuple | None = None
    step: float | None = None
    options: tuple = ()
    norm: str | None = None
    unit: str = ""
    key: str = ""
    help: str = ""
    shown: bool = True
    large_default: Any = None

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"param kind must be one of {KINDS}, got {self.kind!r}")
        if self.kind in ("int", "float"):
            self.bounds()
        if self.large_default is not None:
            self.check(self.large_default)  # ValueError when outside the accepted range

    def bounds(self) -> tuple[float, float]:
        """(lo, hi) of a numeric param (ValueError when a bound is missing)."""
        if self.lo is None or self.hi is None:
            raise ValueError(f"param {self.name!r} of kind {self.kind} needs lo and hi")
        return self.lo, self.hi

    def check(self, v):
        """v converted to the param's kind when it is allowed; else ValueError naming the value."""
        if self.kind == "choice":
            if isinstance(v, bool) or v not in self.options:
                raise ValueError(f"{self.name} must be one of {self.options}, got {v!r}")
            return v
        if self.kind == "bool":
            if not isinstance(v, bool):
                raise ValueError(f"{self.name} must be true or false, got {v!r}")
            return v
        if self.kind == "int":
            if isinstance(v, bool) or not isinstance(v, numbers.Integral):
                raise ValueError(f"{self.name} must be an integer, got {v!r}")
            lo, hi = self.bounds()
            if not lo <= int(v) <= hi:
                raise ValueError(f"{self.name} must be in [{lo}, {hi}], got {v!r}")
            return int(v)
        if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(float(v)):
            raise ValueError(f"{self.name} must be a finite number, got {v!r}")
        f, (lo, hi) = float(v), self.bounds()
        if f < lo or f > hi or (self.lo_open and f == lo):
            raise ValueError(f"{self.name} must be in {'(' if self.lo_open else '['}{lo}, {hi}], got {v!r}")
        return f

    def describe(self) -> dict:
        """Plain JSON-able description, for the service's limits()."""
        return {"name": self.name, "label": self.label, "kind": self.kind, "default": self.default,
                "range": [self.lo, self.hi], "lo_open": self.lo_open,
                "offer": list(self.offer) if self.offer is not None else [self.lo, self.hi],
                "step": self.step, "options": list(self.options), "norm": self.norm, "unit": self.unit,
                "key": self.key, "help": self.help, "shown": self.shown, "large_default": self.large_default}



@dataclass(frozen=True)
class Variant:
    """One menu entry of an attack: the attack in one norm, with its label and help."""
    norm: str
    label: str
    help: str = ""


@dataclass(frozen=True)
class Attack:
    """One registered attack. variants: its norms in preference order (the first is the default
    norm), each with a menu label. targeted: it can push toward a target class. minimal: a
    minimal-perturbation attack (eps is an optional cap, 0 = unbounded; curves run it once, unbounded).
    interactive: offered in the app's menus (False: evaluation only). curve: offered for robustness
    curves. resolve(values, norm) -> values fills "auto" (None) params; check(values) raises
    ValueError for combinations the ranges cannot express."""
    name: str
    label: str
    variants: tuple[Variant, ...]
    params: tuple[Param, ...]
    run: Callable
    targeted: bool = False
    minimal: bool = False
    interactive: bool = True
    curve: bool = False
    order: int = 100
    resolve: Callable[[dict, str], dict] | None = None
    check: Callable[[dict], None] | None = None
    doc: str = field(default="", compare=False)

    @property
    def norms(self) -> tuple[str, ...]:
        return tuple(v.norm for v in self.variants)

    def params_for(self, norm: str) -> dict[str, Param]:
        """{field name: Param} of the params that apply to `norm`."""
        return {p.name: p for p in self.params if p.norm in (None, norm)}

    def variant_key(self, norm: str) -> str:
        """The menu key of (attack, norm): the name for the default norm, "<name>-<norm>" otherwise."""
        return self.name if norm == self.norms[0] else f"{self.name}-{norm}"

    def describe(self) -> dict:
        return {"name": self.name, "label": self.label, "order": self.order, "norms": list(self.norms),
                "variants": [{"key": self.variant_key(v.norm), "norm": v.norm, "label": v.label, "help": v.help}
                             for v in self.variants],
                "params": [p.describe() for p in self.params], "targeted": self.targeted,
                "minimal": self.minimal, "interactive": self.interactive, "curve": self.curve}


LARGE_INPUT_PX = 128  # from this input side up, Param.large_default is the default (ImageNet-size models)
REQUIRED = ("eps", "steps")  # every attack declares these for every norm it supports
RESERVED = ("method", "norm", "targeted", "target_class", "seed", "extra")  # AttackSpec fields no Param may name


def _check(attack: Attack) -> None:
    """ValueError unless `attack` declares a variant, eps and steps for each norm, and no reserved field."""
    if not attack.variants:
        raise ValueError(f"attack {attack.name!r} declares no variant (norm)")
    taken = sorted({p.name for p in attack.params} & set(RESERVED))
    if taken:
        raise ValueError(f"attack {attack.name!r} declares reserved AttackSpec fields {taken} as parameters")
    for norm in attack.norms:
        missing = [f for f in REQUIRED if f not in attack.params_for(norm)]
        if missing:
            raise ValueError(f"attack {attack.name!r} declares no {', '.join(missing)} for norm {norm!r}")


# The built-in attacks are the modules of backend/attacks/methods/, found on first use.
REGISTRY: Registry[Attack] = Registry("attack", Attack, package="backend.attacks.methods", unknown="attack method",
                                      order=lambda a: (a.order, a.name), check=_check)


def register(attack: Attack, replace: bool = False) -> Attack:
    """Add `attack` (ValueError if its name is taken, unless replace, or if it lacks eps/steps)."""
    return REGISTRY.register(attack, replace)


def unregister(name: str) -> None:
    """Remove an attack (tests that registered a toy one); unknown names are ignored."""
    REGISTRY.unregister(name)


def names() -> tuple[str, ...]:
    """Every registered attack, in menu order."""
    return tuple(REGISTRY.names())


def get(name) -> Attack:
    """The attack called `name`; ValueError naming it and the known ones otherwise."""
    return REGISTRY.get(name)


def describe() -> dict[str, dict]:
    """{name: Attack.describe()} in menu order (what the service's limits() serves)."""
    return {n: REGISTRY.get(n).describe() for n in names()}
