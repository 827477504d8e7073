"""The attack contract: AttackSpec (one attack configuration, resolved and validated from the registry),
AttackResult, and the bounds every attack shares.

Images x are float (N, 3, H, W) in [0, 1], labels y int64 (N,); eps and step sizes are in pixel units
(write 8/255 for L-inf, 0.5 for L2). The per-attack rules (norms, parameters, their ranges and
defaults) live with each attack in backend/attacks/methods/ and are read through the registry.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from types import MappingProxyType

import torch

from backend.attacks import registry
from backend.core.validation import check_int

NORMS = ("linf", "l2")
MAX_EPS = MappingProxyType({"linf": 0.5, "l2": 20.0})  # pixel units
MAX_STEPS = 500        # PGD / DeepFool / AutoAttack iterations per restart
MAX_CW_STEPS = 1000    # C&W Adam steps
MAX_BATCH = 512        # images per run_attack call (accuracy_under_attack chunks larger sets)
MAX_RESTARTS = 10
DEFAULT_BATCH = 256
LIMITS = MappingProxyType({"max_steps": MAX_STEPS, "max_cw_steps": MAX_CW_STEPS, "max_batch": MAX_BATCH,
                           "max_restarts": MAX_RESTARTS, "max_eps_linf": MAX_EPS["linf"],
                           "max_eps_l2": MAX_EPS["l2"]})

# The fields an attack may declare as Params, and the neutral value each keeps when it does not.
TUNABLE = MappingProxyType({"eps": None, "step_size": None, "steps": None, "random_start": False, "restarts": 1,
                            "c": 1.0, "kappa": 0.0, "lr": 0.01, "overshoot": 0.02})


@dataclass(frozen=True)
class AttackSpec:
    """One attack configuration. None fields take the method's default when the spec is built.

    method: a registered attack (backend.attacks.registry.names(); each is a module in methods/,
        which declares its norms, parameters, ranges and defaults).
    norm: one of the attack's norms; None -> its first.
    eps: perturbation budget in pixel units within the attack's range; None -> its default. For
        minimal-perturbation attacks (registered minimal) eps is an optional L2 cap, 0 = unbounded.
    step_size: pixel units; None -> the attack's automatic value (PGD: 2.5*eps/steps). Only attacks
        that declare it take one.
    steps: iterations; None -> the attack's default.
    random_start: uniform start in the eps-ball; None -> the attack's default.
    restarts: 1..MAX_RESTARTS random restarts (with random_start); per example the first
        successful restart, else the highest-loss one, is kept.
    targeted / target_class: push every example to target_class (attacks registered as targeted),
        or to the per-example `target` given to run_attack.
    c, kappa, lr: C&W trade-off constant, confidence margin, Adam learning rate.
    overshoot: DeepFool's final scaling of the accumulated step (1 + overshoot).
    seed: seeds random starts (per image, so a result never depends on its batch) and AutoAttack.
    extra: the values of parameters an attack declares beyond these fields ({name: value}; stored as
        sorted pairs, read with spec.param(name)); to_dict/from_dict write and read them as top-level
        keys, so a new attack's own parameter needs no change here.
    A field the attack does not declare must be None or its neutral value (TUNABLE).
    Defaults are resolved once, so dataclasses.replace(spec, steps=...) keeps the old step_size:
    build a new spec (or from_dict) instead.
    """
    method: str = "pgd"
    norm: str | None = None
    eps: float | None = None
    step_size: float | None = None
    steps: int | None = None
    random_start: bool | None = None
    restarts: int = 1
    targeted: bool = False
    target_class: int | None = None
    c: float = 1.0
    kappa: float = 0.0
    lr: float = 0.01
    overshoot: float = 0.02
    seed: int = 0
    extra: tuple = ()

    def __post_init__(self):
        put = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731 - frozen: resolve defaults once
        attack = registry.get(self.method)
        m = attack.name
        norm = attack.norms[0] if self.norm is None else self.norm
        if norm not in NORMS:
            raise ValueError(f"unknown norm {norm!r}; known: {', '.join(NORMS)}")
        if norm not in attack.norms:
            raise ValueError(f"{m} supports norm {' or '.join(attack.norms)}, got {norm!r}")
        put("norm", norm)
        declared = attack.params_for(norm)
        values = {}
        for name, neutral in TUNABLE.items():
            v = getattr(self, name)
            p = declared.get(name)
            if p is None:
                if v is not None and v != neutral:
                    raise ValueError(f"{m} takes no {name}, got {v!r}")
                values[name] = neutral
            else:
                v = p.default if v is None else v
                values[name] = None if v is None else p.check(v)  # None: "auto", resolve() fills it
        try:
            given = dict(self.extra)
        except (TypeError, ValueError):
            raise ValueError(f"extra must map parameter names to values, got {self.extra!r}") from None
        own = [name for name in declared if name not in TUNABLE]
        unknown = sorted(set(given) - set(own), key=str)
        if unknown:
            raise ValueError(f"{m} takes no {', '.join(map(str, unknown))}; "
                             f"its own parameters: {', '.join(own) or 'none'}")
        for name in own:
            v = declared[name].default if given.get(name) is None else given[name]
            values[name] = None if v is None else declared[name].check(v)
        if attack.resolve is not None:
            values = attack.resolve(dict(values), norm)
        for name, p in declared.items():
            if values.get(name) is None:
                raise ValueError(f"{m} has no default for {name} (norm {norm})")
            values[name] = p.check(values[name])
        if attack.check is not None:
            attack.check(values)
        for name in TUNABLE:
            put(name, values[name])
        put("extra", tuple(sorted((name, values[name]) for name in own)))
        if not isinstance(self.targeted, bool):
            raise ValueError(f"targeted must be true or false, got {self.targeted!r}")
        if self.targeted and not attack.targeted:
            known = [n for n in registry.names() if registry.get(n).targeted]
            raise ValueError(f"{m} is untargeted only; targeted attacks: {', '.join(known)}")
        if self.target_class is not None:
            if not self.targeted:
                raise ValueError(f"target_class={self.target_class!r} given but targeted is false")
            put("target_class", check_int("target_class", self.target_class, 0, 10**6))
        put("seed", check_int("seed", self.seed, 0, 2**63 - 1))

    def param(self, name: str):
        """The resolved value of parameter `name`: a field, or one of the attack's own (extra) ones."""
        if name != "extra" and name in self.__dataclass_fields__:
            return getattr(self, name)
        own = dict(self.extra)
        if name not in own:
            raise ValueError(f"{self.method} has no parameter {name!r}")
        return own[name]

    @property
    def attack(self) -> registry.Attack:
        """The registered attack this spec runs."""
        return registry.get(self.method)

    def validate(self, num_classes: int) -> "AttackSpec":
        """Check the parts that depend on the model (target_class < num_classes); returns self."""
        check_int("num_classes", num_classes, 2, 10**6)
        if self.target_class is not None and self.target_class >= num_classes:
            raise ValueError(f"target_class must be in [0, {num_classes - 1}], got {self.target_class!r}")
        return self

    def to_dict(self) -> dict:
        """Plain JSON-able dict of the resolved spec, the attack's own parameters as top-level keys;
        from_dict(to_dict()) == self."""
        d = asdict(self)
        d.update(dict(d.pop("extra")))
        return d

    @classmethod
    def from_dict(cls, d: Mapping) -> "AttackSpec":
        """Build from a mapping, rejecting unknown keys (ValueError naming them); keys that are not
        fields but parameters the attack declares go to `extra`."""
        if not isinstance(d, Mapping):
            raise ValueError(f"attack spec must be a mapping, got {type(d).__name__}")
        known = {f.name for f in fields(cls)} - {"extra"}
        rest = {k: v for k, v in d.items() if k not in known}
        own: set = set()
        if rest:
            try:
                a = registry.get(d.get("method", cls.__dataclass_fields__["method"].default))
                own = {p.name for p in a.params} - set(TUNABLE)
            except ValueError:
                pass
        unknown = sorted(set(rest) - own, key=str)
        if unknown:
            allowed = sorted(known | own)
            raise ValueError(f"unknown attack spec keys {unknown}; allowed: {', '.join(allowed)}")
        return cls(**{k: v for k, v in d.items() if k in known}, extra=tuple(sorted(rest.items())))


@dataclass
class AttackResult:
    """Outcome of run_attack on N images with C classes; tensors live on the model's device.

    x_adv (N,3,H,W) float in [0, 1], detached; success (N,) bool (untargeted: pred_adv != y;
    targeted: pred_adv == target); linf, l2 (N,) norms of x_adv - x; iterations (N,) int64 steps
    actually spent per example; pred_clean, pred_adv (N,) int64; logits_clean, logits_adv (N,C);
    target (N,) int64 or None; spec: the resolved spec.
    """
    x_adv: torch.Tensor
    success: torch.Tensor
    linf: torch.Tensor
    l2: torch.Tensor
    iterations: torch.Tensor
    pred_clean: torch.Tensor
    pred_adv: torch.Tensor
    logits_clean: torch.Tensor
    logits_adv: torch.Tensor
    target: torch.Tensor | None
    spec: AttackSpec
