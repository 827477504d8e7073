"""Adversarial attacks behind one contract: FGSM, PGD (L-inf / L2), C&W-L2, DeepFool and AutoAttack.

Contract (torchattacks-like): images x are float (N, 3, H, W) in [0, 1], labels y are int64 (N,),
eps and step sizes are in pixel units (write 8/255 for L-inf, 0.5 for L2). `run_attack(model, x, y,
spec)` returns an `AttackResult`. The model is a shared, frozen, eval-mode module that returns logits:
nothing here switches its mode, writes its parameters or leaves gradients on them, and gradients
are taken with respect to inputs only, so one model may be attacked from several threads at once.

Every attack documents itself with the same template: what it optimises, the norm and the meaning
of eps, which spec fields it reads, and what `iterations` counts.
"""
from __future__ import annotations

import hashlib
import logging
import math
import numbers
from collections.abc import Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields
from types import MappingProxyType
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from backend.attacks.pgd import pgd, project, random_start

log = logging.getLogger(__name__)

METHODS = ("fgsm", "pgd", "cw", "deepfool", "autoattack")
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

_NORMS_OF = {"fgsm": ("linf",), "pgd": ("linf", "l2"), "cw": ("l2",), "deepfool": ("l2",),
             "autoattack": ("linf", "l2")}
_TARGETED = ("fgsm", "pgd", "cw")
_MIN_NORM = ("cw", "deepfool")  # minimal-perturbation attacks: eps is an optional cap, 0 = unbounded
_DEFAULT_STEPS = {"fgsm": 1, "pgd": 10, "cw": 100, "deepfool": 50, "autoattack": 100}
_DEFAULT_EPS = {"linf": 8 / 255, "l2": 0.5}
_DEEPFOOL_CANDIDATES = 10  # the label plus the 9 most likely other classes, as in DeepFool's reference code
_SQUARE_QUERIES = 5000     # AutoAttack 'standard' budget for the black-box Square attack


def _integer(name: str, v, lo: int, hi: int) -> int:
    if isinstance(v, bool) or not isinstance(v, numbers.Integral):
        raise ValueError(f"{name} must be an integer, got {v!r}")
    if not lo <= int(v) <= hi:
        raise ValueError(f"{name} must be in [{lo}, {hi}], got {v!r}")
    return int(v)


def _real(name: str, v, lo: float, hi: float, lo_open: bool = False) -> float:
    if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(float(v)):
        raise ValueError(f"{name} must be a finite number, got {v!r}")
    v = float(v)
    if v < lo or v > hi or (lo_open and v == lo):
        raise ValueError(f"{name} must be in {'(' if lo_open else '['}{lo}, {hi}], got {v!r}")
    return v


@dataclass(frozen=True)
class AttackSpec:
    """One attack configuration. None fields take the method's default when the spec is built.

    method: "fgsm" | "pgd" | "cw" | "deepfool" | "autoattack".
    norm: "linf" | "l2"; None -> "l2" for cw/deepfool, else "linf". fgsm is L-inf only, cw/deepfool L2 only.
    eps: perturbation budget in pixel units, 0 <= eps <= MAX_EPS[norm]; None -> 8/255 (linf), 0.5 (l2),
        0 for cw/deepfool, where eps is an optional L2 cap and 0 means unbounded.
    step_size: pixel units; None -> 2.5*eps/steps (pgd), eps (fgsm), 1.25*eps (fgsm + random start).
        Only fgsm/pgd take one.
    steps: iterations; None -> fgsm 1 (its only value), pgd 10, cw 100, deepfool 50, autoattack 100.
    random_start: uniform start in the eps-ball (fgsm/pgd only); None -> True for pgd, False otherwise.
    restarts: 1..MAX_RESTARTS random restarts (fgsm/pgd with random_start); per example the first
        successful restart, else the highest-loss one, is kept.
    targeted / target_class: push every example to target_class (fgsm, pgd, cw), or to the per-example
        `target` given to run_attack.
    c, kappa, lr: C&W trade-off constant, confidence margin, Adam learning rate.
    overshoot: DeepFool's final scaling of the accumulated step (1 + overshoot).
    seed: seeds random starts (per image, so a result never depends on its batch) and AutoAttack.
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

    def __post_init__(self):
        put = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731 - frozen: resolve defaults once
        m = self.method
        if m not in METHODS:
            raise ValueError(f"unknown attack method {m!r}; known: {', '.join(METHODS)}")
        norm = _NORMS_OF[m][0] if self.norm is None else self.norm
        if norm not in NORMS:
            raise ValueError(f"unknown norm {norm!r}; known: {', '.join(NORMS)}")
        if norm not in _NORMS_OF[m]:
            raise ValueError(f"{m} supports norm {' or '.join(_NORMS_OF[m])}, got {norm!r}")
        put("norm", norm)
        eps = (0.0 if m in _MIN_NORM else _DEFAULT_EPS[norm]) if self.eps is None else self.eps
        eps = _real("eps", eps, 0.0, MAX_EPS[norm], lo_open=(m == "autoattack"))
        put("eps", eps)
        hi = MAX_CW_STEPS if m == "cw" else MAX_STEPS
        steps = _DEFAULT_STEPS[m] if self.steps is None else self.steps
        steps = _integer("steps", steps, 0 if m == "pgd" else 1, 1 if m == "fgsm" else hi)
        put("steps", steps)
        rs = (m == "pgd") if self.random_start is None else self.random_start
        if not isinstance(rs, bool):
            raise ValueError(f"random_start must be true or false, got {rs!r}")
        if rs and m not in ("fgsm", "pgd"):
            raise ValueError(f"random_start=True is not supported by {m}")
        put("random_start", rs)
        if m in ("fgsm", "pgd"):
            # FGSM-RS (Wong et al. 2020) steps 1.25*eps from its random start; PGD's 2.5*eps/steps
            # lets a walk from any start reach the far side of the ball.
            default = (1.25 * eps if rs else eps) if m == "fgsm" else 2.5 * eps / max(steps, 1)
            put("step_size", _real("step_size", default if self.step_size is None else self.step_size,
                                   0.0, MAX_EPS[norm]))
        elif self.step_size is not None:
            raise ValueError(f"{m} takes no step_size, got {self.step_size!r}")
        restarts = _integer("restarts", self.restarts, 1, MAX_RESTARTS)
        put("restarts", restarts)
        if restarts > 1 and not rs:
            raise ValueError(f"restarts={restarts} needs random_start=True (without it every restart is identical)")
        if not isinstance(self.targeted, bool):
            raise ValueError(f"targeted must be true or false, got {self.targeted!r}")
        if self.targeted and m not in _TARGETED:
            raise ValueError(f"{m} is untargeted only; targeted attacks: {', '.join(_TARGETED)}")
        if self.target_class is not None:
            if not self.targeted:
                raise ValueError(f"target_class={self.target_class!r} given but targeted is false")
            put("target_class", _integer("target_class", self.target_class, 0, 10**6))
        put("c", _real("c", self.c, 0.0, 1e4, lo_open=True))
        put("kappa", _real("kappa", self.kappa, 0.0, 1e3))
        put("lr", _real("lr", self.lr, 0.0, 1.0, lo_open=True))
        put("overshoot", _real("overshoot", self.overshoot, 0.0, 1.0))
        put("seed", _integer("seed", self.seed, 0, 2**63 - 1))

    def validate(self, num_classes: int) -> "AttackSpec":
        """Check the parts that depend on the model (target_class < num_classes); returns self."""
        _integer("num_classes", num_classes, 2, 10**6)
        if self.target_class is not None and self.target_class >= num_classes:
            raise ValueError(f"target_class must be in [0, {num_classes - 1}], got {self.target_class!r}")
        return self

    def to_dict(self) -> dict:
        """Plain JSON-able dict of the resolved spec; from_dict(to_dict()) == self."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping) -> "AttackSpec":
        """Build from a mapping, rejecting unknown keys (ValueError naming them)."""
        if not isinstance(d, Mapping):
            raise ValueError(f"attack spec must be a mapping, got {type(d).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known, key=str)
        if unknown:
            raise ValueError(f"unknown attack spec keys {unknown}; allowed: {', '.join(sorted(known))}")
        return cls(**d)


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


def _forward(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    # CPU convolutions run faster on channels-last input (bench/attack_throughput.py); the model's
    # own weights are left untouched, so this changes nothing for other users of the model.
    if x.device.type == "cpu":
        x = x.contiguous(memory_format=torch.channels_last)
    return model(x)


def _ascent_loss(model: nn.Module, labels: torch.Tensor, targeted: bool, first: list) -> Callable:
    """Per-example loss (N,) to maximise: CE to the label, or minus CE to the target. The logits of
    the first call are appended to `first` (without a random start they are the clean logits)."""
    sign = -1.0 if targeted else 1.0

    def loss(xa: torch.Tensor) -> torch.Tensor:
        logits = _forward(model, xa)
        if not first:
            first.append(logits.detach())
        return sign * F.cross_entropy(logits, labels, reduction="none")
    return loss


def _is_success(pred: torch.Tensor, labels: torch.Tensor, targeted: bool) -> torch.Tensor:
    return pred == labels if targeted else pred != labels


def _random_starts(x: torch.Tensor, eps: float, norm: str, seed: int, restart: int) -> torch.Tensor:
    """Per-image random starts seeded by (seed, restart, the image's bytes): an image gets the same
    start whatever batch it arrives in, so batched and per-example results agree. (N,3,H,W)."""
    xc = x.detach().to("cpu", torch.float32).contiguous()
    tag = f"{seed}:{restart}".encode()
    starts = []
    for i in range(xc.shape[0]):
        h = hashlib.blake2b(xc[i].numpy().tobytes(), digest_size=8, key=tag)
        g = torch.Generator().manual_seed(int.from_bytes(h.digest(), "little") >> 1)
        starts.append(random_start(xc[i:i + 1], eps, norm, g))
    return torch.cat(starts).to(x.device)


def _gradient_attack(model, x, y, t, spec):
    """FGSM / PGD. Maximises CE to y (untargeted) or minimises CE to t (targeted) inside the
    eps-ball of spec.norm intersected with [0, 1]; fgsm is one step of spec.step_size (= eps unless
    random_start). Reads eps, step_size, steps, random_start, restarts, seed. iterations = steps x
    restarts run on that example (restarts stop per example at the first success)."""
    labels = t if spec.targeted else y
    steps = 1 if spec.method == "fgsm" else spec.steps
    n = x.shape[0]
    best_x, iters = x.clone(), torch.zeros(n, dtype=torch.long, device=x.device)
    best_loss = torch.full((n,), -math.inf, device=x.device)
    best_ok = torch.zeros(n, dtype=torch.bool, device=x.device)
    todo = torch.arange(n, device=x.device)
    best_logits = None
    for r in range(spec.restarts):
        xs, ls = x[todo], labels[todo]
        x0 = _random_starts(xs, spec.eps, spec.norm, spec.seed, r) if spec.random_start and spec.eps > 0 else None
        first: list = []
        xa = pgd(_ascent_loss(model, ls, spec.targeted, first), xs, spec.eps, spec.step_size, steps,
                 spec.norm, rand_init=False, x_init=x0)
        if spec.restarts == 1:  # nothing to choose between: skip a forward pass (run_attack does one)
            return xa, iters + steps, None, first[0] if x0 is None and first else None
        with torch.no_grad():
            logits = _forward(model, xa)
            sign = -1.0 if spec.targeted else 1.0
            loss = sign * F.cross_entropy(logits, ls, reduction="none")
            ok = _is_success(logits.argmax(1), ls, spec.targeted)
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


def _cw(model, x, y, t, spec):
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
        logits = _forward(model, xa)
        l2sq = (xa - x[idx]).pow(2).flatten(1).sum(1)
        z_lab = logits.gather(1, labels[idx, None]).squeeze(1)
        z_other = logits.masked_fill(F.one_hot(labels[idx], logits.shape[1]).bool(), -math.inf).amax(1)
        margin = z_other - z_lab if spec.targeted else z_lab - z_other
        loss = l2sq + spec.c * margin.clamp(min=-spec.kappa)
        (g,) = torch.autograd.grad(loss.sum(), wi)
        with torch.no_grad():
            ok = _is_success(logits.argmax(1), labels[idx], spec.targeted)
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


def _deepfool(model, x, y, t, spec):
    """DeepFool-L2, batched: per example, linearise the classifier around x_adv, step to the nearest
    linearised boundary between the label y and its 9 most likely rivals (the clean logits choose
    them), accumulate the steps r, and set x_adv = clip(x + (1 + overshoot) * r). Examples stop as
    soon as they are misclassified (already misclassified ones take 0 steps). Unbounded; eps > 0
    projects onto the L2 ball of radius eps. Reads steps, overshoot, eps. iterations = linearisation
    steps taken per example."""
    n = x.shape[0]
    with torch.no_grad():
        logits0 = _forward(model, x)
    k = min(_DEEPFOOL_CANDIDATES, logits0.shape[1]) - 1
    rivals = logits0.masked_fill(F.one_hot(y, logits0.shape[1]).bool(), -math.inf).topk(k, dim=1).indices
    r_tot, x_adv = torch.zeros_like(x), x.clone()
    iters = torch.zeros(n, dtype=torch.long, device=x.device)
    active = logits0.argmax(1) == y
    for it in range(spec.steps + 1):  # the last pass only checks whether the final step succeeded
        idx = active.nonzero().squeeze(1)
        if idx.numel() == 0:
            break
        xa = x_adv[idx].requires_grad_(True)
        logits = _forward(model, xa)
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


def _autoattack(model, x, y, t, spec):
    """AutoAttack 'standard' (APGD-CE, APGD-T, FAB-T, Square with 5000 queries; 9 target classes) built
    from torchattacks' components with spec.steps iterations (torchattacks.AutoAttack itself fixes
    10; the reference uses 100, our default). Untargeted, eps-ball of spec.norm. SLOW: minutes per
    hundred images on CPU; meant for evaluation. torchattacks reseeds the global RNG, so the caller's
    RNG state is saved and restored around it. iterations = spec.steps for every example."""
    import torchattacks  # lazy: the training path must not need it

    nm = {"linf": "Linf", "l2": "L2"}[spec.norm]
    with torch.no_grad():
        n_cls = min(_forward(model, x[:1]).shape[1], 10)  # n_classes - 1 = number of target classes
    common = dict(norm=nm, eps=spec.eps, seed=spec.seed, n_restarts=1)
    atk = torchattacks.MultiAttack([
        torchattacks.APGD(model, steps=spec.steps, loss="ce", **common),
        torchattacks.APGDT(model, steps=spec.steps, n_classes=n_cls, **common),
        torchattacks.FAB(model, steps=spec.steps, multi_targeted=True, n_classes=n_cls, **common),
        torchattacks.Square(model, n_queries=_SQUARE_QUERIES, **common),
    ])
    # torchattacks' Attack.__call__ calls model.eval(): a no-op on our eval-mode (frozen) models,
    # and run_attack refuses models in train mode, so it never flips a shared model's mode.
    devices = [x.device] if x.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices), _param_grads_restored(model):
        # contiguous NCHW: FAB reshapes input gradients with .view(), which fails on channels-last ones
        x_adv = atk(x.contiguous(), y).detach().to(x.device)
    x_adv = project(x_adv, x, spec.eps, spec.norm)  # guards the float round-off of the sub-attacks
    return x_adv, torch.full((x.shape[0],), spec.steps, dtype=torch.long, device=x.device), None, None


_ATTACKS = {"fgsm": _gradient_attack, "pgd": _gradient_attack, "cw": _cw, "deepfool": _deepfool,
            "autoattack": _autoattack}


def _model_device(model: nn.Module) -> torch.device:
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if model.training:
        raise ValueError("model is in train mode; attacks need a frozen eval-mode model (backend.core.models.freeze)")
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def _check_inputs(x, y, max_n: int | None = MAX_BATCH) -> None:
    if not torch.is_tensor(x) or x.dim() != 4 or x.shape[1] != 3 or not x.is_floating_point():
        raise ValueError(f"x must be a float tensor (N,3,H,W), got {getattr(x, 'dtype', type(x).__name__)} "
                         f"{tuple(getattr(x, 'shape', ()))}")
    n = x.shape[0]
    if n == 0 or (max_n is not None and n > max_n):
        raise ValueError(f"batch size must be in [1, {max_n}], got {n}")
    lo, hi = float(x.min()), float(x.max())
    if not (0.0 <= lo and hi <= 1.0):  # also false for NaN
        raise ValueError(f"x must lie in [0, 1], got values in [{lo}, {hi}]")
    if not torch.is_tensor(y) or y.shape != (n,) or y.is_floating_point() or y.dtype == torch.bool:
        raise ValueError(f"y must be an integer tensor of shape ({n},), got {getattr(y, 'dtype', type(y).__name__)} "
                         f"{tuple(getattr(y, 'shape', ()))}")


def _class_index(name: str, v: torch.Tensor, num_classes: int) -> None:
    if v.numel() and (int(v.min()) < 0 or int(v.max()) >= num_classes):
        raise ValueError(f"{name} must be in [0, {num_classes - 1}], got values in [{int(v.min())}, {int(v.max())}]")


def run_attack(model: nn.Module, x: torch.Tensor, y: torch.Tensor, spec: AttackSpec,
               target: torch.Tensor | int | None = None) -> AttackResult:
    """Attack a batch. model: frozen eval-mode module, (N,3,H,W) -> logits (N,C). x: (N,3,H,W) float
    in [0, 1], 1 <= N <= MAX_BATCH, never modified. y: (N,) int labels. target: (N,) or int target
    classes for a targeted spec (default spec.target_class). Raises ValueError naming any bad value.
    The whole call is deterministic given spec.seed (random starts are seeded per image)."""
    if not isinstance(spec, AttackSpec):
        raise ValueError(f"spec must be an AttackSpec, got {type(spec).__name__}")
    device = _model_device(model)
    _check_inputs(x, y)
    # inference_mode(False)/enable_grad: callers may sit inside no_grad or inference_mode (a server);
    # the clone turns a possible inference tensor into one autograd can use, and shields x.
    with torch.inference_mode(False), torch.enable_grad():
        # On CPU keep every image channels-last (see _forward): x_adv then inherits it, no copy per step.
        fmt = torch.channels_last if device.type == "cpu" else torch.contiguous_format
        x = x.detach().to(device=device, dtype=torch.float32).clone(memory_format=fmt)
        y = y.detach().to(device=device, dtype=torch.long).clone()
        with torch.no_grad():  # one image tells C for validation; attacks often see x's logits anyway
            probe = _forward(model, x[:1])
        if probe.dim() != 2 or probe.shape[0] != 1:
            raise ValueError(f"model must return logits (N, C), got shape {tuple(probe.shape)} for N=1")
        num_classes = probe.shape[1]
        spec.validate(num_classes)
        _class_index("y", y, num_classes)
        t = None
        if spec.targeted:
            t = spec.target_class if target is None else target
            if t is None:
                raise ValueError("targeted attack needs target_class in the spec or a target argument")
            t = torch.as_tensor(t, device=device).clone()
            if t.is_floating_point() or t.dtype == torch.bool or t.shape not in ((), (x.shape[0],)):
                raise ValueError(f"target must be an int or an integer tensor of shape ({x.shape[0]},), got {t!r}")
            t = t.long().expand(x.shape[0]).clone()
            _class_index("target", t, num_classes)
        elif target is not None:
            raise ValueError(f"target={target!r} given for an untargeted spec (set targeted=True)")
        # Each attack returns (x_adv, iterations, logits of x_adv, logits of x), the logits None
        # when it has none at hand, so no forward pass is spent twice.
        x_adv, iters, logits_adv, logits_clean = _ATTACKS[spec.method](model, x, y, t, spec)
        x_adv = x_adv.detach().contiguous()
        with torch.no_grad():
            if logits_adv is None:
                logits_adv = _forward(model, x_adv)
            if logits_clean is None:
                logits_clean = probe if x.shape[0] == 1 else _forward(model, x)
    pred_adv = logits_adv.argmax(1)
    delta = (x_adv - x).flatten(1)  # (N, 3*H*W)
    logits_clean, logits_adv = logits_clean.detach(), logits_adv.detach()
    success = _is_success(pred_adv, t if spec.targeted else y, spec.targeted)
    log.debug("%s/%s eps=%.4g: %d/%d successful", spec.method, spec.norm, spec.eps, int(success.sum()), len(x))
    return AttackResult(x_adv=x_adv, success=success, linf=delta.abs().amax(1), l2=delta.norm(dim=1),
                        iterations=iters, pred_clean=logits_clean.argmax(1), pred_adv=pred_adv,
                        logits_clean=logits_clean, logits_adv=logits_adv, target=t, spec=spec)


def _batches(n: int, batch_size: int) -> list[slice]:
    _integer("batch_size", batch_size, 1, MAX_BATCH)
    return [slice(i, min(i + batch_size, n)) for i in range(0, n, batch_size)]


def accuracy_under_attack(model: nn.Module, x: torch.Tensor, y: torch.Tensor, spec: AttackSpec,
                          batch_size: int = DEFAULT_BATCH) -> float:
    """Robust accuracy in [0, 1]: the fraction of x (N,3,H,W) in [0, 1], any N >= 1, that is classified
    as y both clean and after the attack (so it never exceeds clean accuracy). Runs in chunks of
    batch_size <= MAX_BATCH."""
    _check_inputs(x, y, max_n=None)
    correct = 0
    for s in _batches(x.shape[0], batch_size):
        res = run_attack(model, x[s], y[s], spec)
        ys = y[s].to(res.pred_adv.device)
        correct += int(((res.pred_clean == ys) & (res.pred_adv == ys)).sum())
    return correct / x.shape[0]


def robustness_curve(model: nn.Module, x: torch.Tensor, y: torch.Tensor, method: str, eps_list,
                     steps: int | None = None, progress: Callable[[int, int], None] | None = None,
                     should_stop: Callable[[], bool] | None = None, *, norm: str | None = None,
                     batch_size: int = DEFAULT_BATCH, seed: int = 0) -> list[dict]:
    """Robust accuracy against eps: [{"eps": e, "accuracy": a}, ...] in eps_list order.

    x (N,3,H,W) in [0, 1], y (N,). fgsm/pgd/autoattack run once per eps (steps=None: the method's
    default; pgd step size 2.5*eps/steps). cw/deepfool are minimal-perturbation attacks: they run
    once unbounded and an example counts as robust at eps when it is correct clean and the attack
    failed or needed an L2 norm > eps. progress(done, total) is called after every batch;
    should_stop() is polled before every batch and, when true, only the finished eps points return.
    """
    if not isinstance(eps_list, (list, tuple)) or not 1 <= len(eps_list) <= 64:
        raise ValueError(f"eps_list must be a list of 1..64 values, got {eps_list!r}")
    specs = [AttackSpec(method=method, norm=norm, eps=e, steps=steps, seed=seed) for e in eps_list]
    _check_inputs(x, y, max_n=None)
    chunks = _batches(x.shape[0], batch_size)
    runs = [AttackSpec(method=method, norm=norm, eps=0.0, steps=steps, seed=seed)] if method in _MIN_NORM else specs
    total, done, out = len(runs) * len(chunks), 0, []
    for spec in runs:
        robust = torch.zeros(len(specs) if method in _MIN_NORM else 1, dtype=torch.long)
        for s in chunks:
            if should_stop is not None and should_stop():
                return out
            res = run_attack(model, x[s], y[s], spec)
            ys = y[s].to(res.pred_adv.device)
            clean_ok = res.pred_clean == ys
            if method in _MIN_NORM:
                for i, e in enumerate(eps_list):
                    broken = res.success & (res.l2 <= float(e) + 1e-6)
                    robust[i] += int((clean_ok & ~broken).sum())
            else:
                robust[0] += int((clean_ok & (res.pred_adv == ys)).sum())
            done += 1
            if progress is not None:
                progress(done, total)
        n = x.shape[0]
        if method in _MIN_NORM:
            return [{"eps": float(sp.eps), "accuracy": int(r) / n} for sp, r in zip(specs, robust)]
        out.append({"eps": float(spec.eps), "accuracy": int(robust[0]) / n})
    return out


def sanity_checks(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> list[str]:
    """Warnings (empty list = none) that an attack evaluation of this model may be meaningless, in the
    spirit of fra31/auto-attack's checks: outputs that look like probabilities instead of logits,
    non-finite outputs, exactly-zero input gradients (gradient masking), accuracy on the labelled
    x (N,3,H,W) in [0, 1], N <= MAX_BATCH, within two standard errors of chance (untrained or
    randomised model), and outputs that change between two identical forward passes."""
    device = _model_device(model)
    _check_inputs(x, y)
    warnings: list[str] = []
    with torch.inference_mode(False), torch.enable_grad():
        x = x.detach().to(device=device, dtype=torch.float32).clone().requires_grad_(True)
        y = y.detach().to(device=device, dtype=torch.long)
        logits = _forward(model, x)
        n, c = logits.shape
        _class_index("y", y, c)
        out = logits.detach()
        if not torch.isfinite(out).all():
            return [f"model outputs contain NaN or Inf for {int((~torch.isfinite(out)).any(1).sum())} of {n} images"]
        if (out >= 0).all() and torch.allclose(out.sum(1), torch.ones(n, device=device), atol=1e-3):
            warnings.append("model outputs are non-negative and rows sum to 1: they look like probabilities, "
                            "not logits; cross-entropy attacks on them are weak (softmax applied twice)")
        (g,) = torch.autograd.grad(F.cross_entropy(logits, y, reduction="sum"), x)
        zero = int((g.flatten(1).abs().amax(1) == 0).sum())
        if zero:
            warnings.append(f"{zero} of {n} images have an exactly zero input gradient: gradient masking makes "
                            "gradient attacks (fgsm, pgd, cw, deepfool) unreliable; trust black-box results more")
        acc, chance = float((out.argmax(1) == y).float().mean()), 1.0 / c
        if acc <= chance + 2 * math.sqrt(chance * (1 - chance) / n):
            warnings.append(f"clean accuracy {acc:.2f} on {n} images is within two standard errors of chance "
                            f"({chance:.2f}): the model may be untrained or randomised")
        with torch.no_grad():
            again = _forward(model, x.detach())
        if not torch.allclose(out, again, rtol=1e-4, atol=1e-5):
            warnings.append(f"two identical forward passes differ (max |diff| {float((out - again).abs().max()):.3g}): "
                            "the model is randomised (dropout on? a stochastic defence?); use EOT-style attacks")
    return warnings
