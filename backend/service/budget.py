"""What a heavy request will cost, estimated before it runs, so a synchronous HTTP request that would
take minutes on a CPU is refused with a clear message (and a pointer to the task API) instead of run.

The unit is one image-pass: a forward plus a backward pass of one 32x32 image through a width-16
ResNet-18. Any other model costs its forward FLOPs at its own input size (counted once per model with
torch.utils.flop_counter, backend.core.flops) divided by that reference's: a 224-px ResNet-50 is about
117 units, a width-64 FastNet about 4.3, a width-32 ResNet-18 about 4. The rates are conservative readings of
bench/interactive.py on the project's 2-core CPU under load (about 1,500 image-passes/s idle in
PGD batches, and 10-20 ms per single-image optimisation step); on CUDA they are far higher.
"""
from __future__ import annotations

import sys

from backend.service import api

PASSES_PER_S = {"cpu": 500.0, "cuda": 25000.0}
STEP_S = {"cpu": 0.02, "cuda": 0.002}       # one single-image optimisation step (class visualisation)
UMAP_S = {"cpu": 8.0, "cuda": 8.0}          # a UMAP fit of up to 2,000 points (CPU either way)
UMAP_JIT_S = 25.0                           # numba's first compile, when nothing has warmed umap up
CORRUPT_S = {"cpu": 0.002, "cuda": 0.002}  # making one corrupted 32-px image (numpy / scipy on the CPU; x area)
SALIENCY_PASSES = 32                        # image-passes of one saliency map (Integrated Gradients' steps)
MARGIN = 2.0                                # refuse above limit / MARGIN: headroom for a shared CPU


def _scale(service, model_ids) -> list[float]:
    """Each model's cost in image-passes of the reference network (see the module docstring)."""
    from backend.core.flops import relative_cost  # torch is loaded by now (the Service is)

    ids = service.models.resolve(model_ids)
    return [relative_cost(service.models.model(m), service.models.weights_key(m)) for m in ids]


def estimate_s(service, kind: str, p: dict) -> float:
    """Seconds that `kind` (robustness_curve | embed | class_visualisation | corruption_view |
    corruption_curve) with parameters p would
    take on service.device. p: its keyword arguments; those left out take the declared defaults
    (backend.service.api). Parameters are validated by the service itself; here only counted."""
    p = api.get(kind).from_params({k: v for k, v in p.items() if k not in api.HOOKS})
    dev = "cuda" if service.device.startswith("cuda") else "cpu"
    if kind == "robustness_curve":
        eps = p.get("eps_list")
        n_attacked = 6 if eps is None else sum(1 for e in eps if e)
        from backend.service.analyses import fixed_steps  # the Service (and torch) is loaded by now

        per_eps = (fixed_steps(p["method"]) or int(p["steps"])) + 1
        passes = int(p["n"]) * (1 + n_attacked * per_eps)
        return sum(s * passes for s in _scale(service, p.get("model_ids"))) / PASSES_PER_S[dev]
    if kind == "embed":
        spec = p.get("spec")  # {} is an attack too: AttackSpec's defaults
        if spec is None:
            steps = 0
        else:  # FGSM: one gradient step and one check
            steps = 2 if spec.get("method") == "fgsm" else int(spec.get("steps") or 10) + 1
        scale = _scale(service, [p["model_id"]])[0]
        umap = 0.0
        if p["method"] == "umap":
            umap = UMAP_S[dev] + (0.0 if "umap" in sys.modules else UMAP_JIT_S)
        return scale * int(p["n"]) * (1 + steps) / PASSES_PER_S[dev] + umap
    if kind in ("corruption_view", "corruption_curve"):
        from backend.core.corruptions import CORRUPTIONS, SEVERITIES

        cells = len(p.get("corruptions") or CORRUPTIONS) * len(p.get("severities") or SEVERITIES)
        # a forward costs about a third of an image-pass; a saliency map up to SALIENCY_PASSES of them
        per = 0.5 + (SALIENCY_PASSES if p.get("saliency") else 0)
        if kind == "corruption_view":  # corrupted at the image's own size (224 px for ImageNet's)
            n, side = 1, int(service.images.get(p["image_id"])["pixels"].shape[0])
        else:
            n = int(p["n"])
            side = max(service.engine.input_size(m) for m in service.models.resolve(p.get("model_ids")))
        make = CORRUPT_S[dev] * (side / 32) ** 2
        return n * cells * (make + per * sum(_scale(service, p.get("model_ids"))) / PASSES_PER_S[dev])
    if kind == "class_visualisation":
        return sum(s * int(p["steps"]) * STEP_S[dev] for s in _scale(service, p.get("model_ids")))
    raise ValueError(f"no cost estimate for {kind!r}")


def check_sync(service, kind: str, p: dict, limit_s: float) -> None:
    """ValueError when a synchronous request of `kind` is estimated to need more than limit_s / MARGIN
    seconds (it would risk running past the request's deadline of limit_s)."""
    est = estimate_s(service, kind, p)
    if est * MARGIN > limit_s:
        raise ValueError(
            f"this {kind.replace('_', ' ')} would take about {est:.0f} s on {service.device}, too long for one "
            f"request (limit {limit_s:.0f} s, with headroom for a shared machine); use fewer models, images or "
            f"steps, or run it as a background task (POST /tasks with kind {kind!r}), which reports progress "
            "and can be cancelled")
