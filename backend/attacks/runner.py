"""Running attacks: run_attack (one batch, the contract of backend.attacks.spec), accuracy_under_attack
and robustness_curve (any number of images, in chunks). The attack itself comes from the registry.
"""
from __future__ import annotations

import logging
from typing import Callable

import torch
import torch.nn as nn

from backend.attacks import registry
from backend.attacks.common import forward, is_success
from backend.attacks.spec import DEFAULT_BATCH, MAX_BATCH, AttackResult, AttackSpec
from backend.core.validation import check_int

log = logging.getLogger("backend.attacks")


def model_device(model: nn.Module) -> torch.device:
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if model.training:
        raise ValueError("model is in train mode; attacks need a frozen eval-mode model (backend.core.models.freeze)")
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def check_inputs(x, y, max_n: int | None = MAX_BATCH) -> None:
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


def class_index(name: str, v: torch.Tensor, num_classes: int) -> None:
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
    device = model_device(model)
    check_inputs(x, y)
    # inference_mode(False)/enable_grad: callers may sit inside no_grad or inference_mode (a server);
    # the clone turns a possible inference tensor into one autograd can use, and shields x.
    with torch.inference_mode(False), torch.enable_grad():
        # On CPU keep every image channels-last (see _forward): x_adv then inherits it, no copy per step.
        fmt = torch.channels_last if device.type == "cpu" else torch.contiguous_format
        x = x.detach().to(device=device, dtype=torch.float32).clone(memory_format=fmt)
        y = y.detach().to(device=device, dtype=torch.long).clone()
        with torch.no_grad():  # one image tells C for validation; attacks often see x's logits anyway
            probe = forward(model, x[:1])
        if probe.dim() != 2 or probe.shape[0] != 1:
            raise ValueError(f"model must return logits (N, C), got shape {tuple(probe.shape)} for N=1")
        num_classes = probe.shape[1]
        spec.validate(num_classes)
        class_index("y", y, num_classes)
        t: torch.Tensor | None = None
        if spec.targeted:
            want = spec.target_class if target is None else target
            if want is None:
                raise ValueError("targeted attack needs target_class in the spec or a target argument")
            tt = torch.as_tensor(want, device=device).clone()
            if tt.is_floating_point() or tt.dtype == torch.bool or tt.shape not in ((), (x.shape[0],)):
                raise ValueError(f"target must be an int or an integer tensor of shape ({x.shape[0]},), got {tt!r}")
            t = tt.long().expand(x.shape[0]).clone()
            class_index("target", t, num_classes)
        elif target is not None:
            raise ValueError(f"target={target!r} given for an untargeted spec (set targeted=True)")
        # Each attack returns (x_adv, iterations, logits of x_adv, logits of x), the logits None
        # when it has none at hand, so no forward pass is spent twice.
        x_adv, iters, logits_adv, logits_clean = spec.attack.run(model, x, y, t, spec)
        x_adv = x_adv.detach().contiguous()
        with torch.no_grad():
            if logits_adv is None:
                logits_adv = forward(model, x_adv)
            if logits_clean is None:
                logits_clean = probe if x.shape[0] == 1 else forward(model, x)
    pred_adv = logits_adv.argmax(1)
    delta = (x_adv - x).flatten(1)  # (N, 3*H*W)
    logits_clean, logits_adv = logits_clean.detach(), logits_adv.detach()
    success = is_success(pred_adv, y if t is None else t, spec.targeted)  # t is set exactly when targeted
    log.debug("%s/%s eps=%.4g: %d/%d successful", spec.method, spec.norm, spec.eps, int(success.sum()), len(x))
    return AttackResult(x_adv=x_adv, success=success, linf=delta.abs().amax(1), l2=delta.norm(dim=1),
                        iterations=iters, pred_clean=logits_clean.argmax(1), pred_adv=pred_adv,
                        logits_clean=logits_clean, logits_adv=logits_adv, target=t, spec=spec)


def _batches(n: int, batch_size: int) -> list[slice]:
    check_int("batch_size", batch_size, 1, MAX_BATCH)
    return [slice(i, min(i + batch_size, n)) for i in range(0, n, batch_size)]


def accuracy_under_attack(model: nn.Module, x: torch.Tensor, y: torch.Tensor, spec: AttackSpec,
                          batch_size: int = DEFAULT_BATCH) -> float:
    """Robust accuracy in [0, 1]: the fraction of x (N,3,H,W) in [0, 1], any N >= 1, that is classified
    as y both clean and after the attack (so it never exceeds clean accuracy). Runs in chunks of
    batch_size <= MAX_BATCH."""
    check_inputs(x, y, max_n=None)
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

    x (N,3,H,W) in [0, 1], y (N,). Budgeted attacks (fgsm, pgd, autoattack) run once per eps
    (steps=None: the method's default; pgd step size 2.5*eps/steps). Minimal-perturbation attacks
    (registered minimal: cw, deepfool) run once unbounded and an example counts as robust at eps
    when it is correct clean and the attack failed or needed an L2 norm > eps. progress(done, total)
    is called after every batch; should_stop() is polled before every batch and, when true, only the
    finished eps points return.
    """
    if not isinstance(eps_list, (list, tuple)) or not 1 <= len(eps_list) <= 64:
        raise ValueError(f"eps_list must be a list of 1..64 values, got {eps_list!r}")
    specs = [AttackSpec(method=method, norm=norm, eps=e, steps=steps, seed=seed) for e in eps_list]
    check_inputs(x, y, max_n=None)
    chunks = _batches(x.shape[0], batch_size)
    minimal = registry.get(method).minimal
    runs = [AttackSpec(method=method, norm=norm, eps=0.0, steps=steps, seed=seed)] if minimal else specs
    total, done = len(runs) * len(chunks), 0
    out: list[dict] = []
    for spec in runs:
        robust = torch.zeros(len(specs) if minimal else 1, dtype=torch.long)
        for s in chunks:
            if should_stop is not None and should_stop():
                return out
            res = run_attack(model, x[s], y[s], spec)
            ys = y[s].to(res.pred_adv.device)
            clean_ok = res.pred_clean == ys
            if minimal:
                for i, e in enumerate(eps_list):
                    broken = res.success & (res.l2 <= float(e) + 1e-6)
                    robust[i] += int((clean_ok & ~broken).sum())
            else:
                robust[0] += int((clean_ok & (res.pred_adv == ys)).sum())
            done += 1
            if progress is not None:
                progress(done, total)
        n = x.shape[0]
        if minimal:
            return [{"eps": float(sp.eps or 0.0), "accuracy": int(r) / n} for sp, r in zip(specs, robust)]
        out.append({"eps": float(spec.eps or 0.0), "accuracy": int(robust[0]) / n})
    return out
