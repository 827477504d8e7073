"""The training registry: every training method and every preset (standard library only).

Everything else reads these: the trainer (backend.train.config, .loop, the CLI choices), the job
runner (backend.service.jobs, which must not load torch), the checkpoint listing order
(backend.core.checkpoints) and, through Service.limits()["jobs"], the Train page's labels and preset
texts. Widths come from backend.core.archs_meta.WIDTHS, the architecture's list, and the data sets a
run may train on from the dataset registry (backend.core.datasets, torch-free too).

The methods are a backend.core.registry.Registry whose built-ins are the modules of
backend/train/methods/, one per method, each declaring its Method together with its loss.

How to add a training method (one new module plus its test; no other file changes):
1. New module backend/train/methods/<name>.py (every module there is imported on first use of the
   registry, so it registers itself). It must import no torch at module level (the job runner and an
   HTTP-only app read the registry without torch): import it, and backend.train.steps (the shared
   step machinery: views, the PGD attack on cross-entropy, train-mode forwards), inside the loss.
2. loss(nets, x_u8, y, ctx) -> the scalar loss of one batch (see backend.train.steps.StepContext).
3. At its end `register(Method(name, label, title, robust=..., contrastive=..., attack=..., needs=(the
   TrainConfig fields it reads beyond the common ones), loss=loss, order=...))`.
4. Run tests/test_train.py (every registered method trains end to end) and tests/test_train_registry.py.
How to add a preset: add a Preset below (its TrainConfig values, a one-line use, the card status).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from backend.core import datasets as dataset_registry
from backend.core.registry import Registry

# A Method's `needs` lists the TrainConfig fields it reads beyond the common ones (the model, optimiser,
# data and validation); these are the groups the built-in methods share
ATTACK_FIELDS = ("eps", "step_size", "attack_steps")
PROBE_FIELDS = ("probe_epochs", "probe_lr", "probe_batch_size", "adv_probe", "ncm_n")
CONTRAST_FIELDS = ("temperature", "base_temperature", "head_bn")
CE_FIELDS = ("label_smoothing",)  # the methods trained with cross-entropy
ATTACKS = ("pgd", "fgsm")  # how a Method's training examples may be crafted (or None: clean training)


@dataclass(frozen=True)
class Method:
    """One training method. `attack`: how its training examples are crafted ("pgd", "fgsm" or None for
    clean training); `robust`: the checkpoint is chosen by robust validation accuracy; `contrastive`:
    an encoder with a projection head, then a linear probe; `needs`: the TrainConfig fields it reads
    beyond the common ones; `loss(nets, x_u8, y, ctx)`: the scalar loss of one batch
    (backend.train.steps); `order`: listing position (the zoo lists models in this order)."""
    name: str
    label: str          # short, for model names and cards ("PGD-AT")
    title: str          # for a form ("PGD adversarial training")
    robust: bool
    contrastive: bool
    attack: str | None
    loss: Callable[..., Any]
    needs: tuple[str, ...] = ()
    order: int = 100

    def training_attack_steps(self, attack_steps: int) -> int:
        """Attack steps per training example, as the card reports them (0 for clean training)."""
        return {"pgd": attack_steps, "fgsm": 1}.get(self.attack or "", 0)


@dataclass(frozen=True)
class Preset:
    """A named set of TrainConfig values (the dataclass defaults fill the rest). `use`: one line on what
    it is for; `label`: the preset as a form shows it; `status`: the card status of its models."""
    name: str
    use: str
    label: str
    status: str
    values: dict = field(default_factory=dict)


def _check(method: Method) -> None:
    if method.attack not in (*ATTACKS, None):
        raise ValueError(f"training method {method.name!r}: attack must be one of {ATTACKS} or None, "
                         f"got {method.attack!r}")
    if method.robust != (method.attack is not None):
        raise ValueError(f"training method {method.name!r}: a robust method trains on crafted examples "
                         f"(attack set) and a clean one on none")
    if not callable(method.loss):
        raise ValueError(f"training method {method.name!r}: loss must be callable")


# The built-in methods are the modules of backend/train/methods/, found on first use.
REGISTRY: Registry[Method] = Registry("training method", Method, package="backend.train.methods",
                                      order=lambda m: m.order, check=_check)


def register(method: Method, replace: bool = False) -> Method:
    """Add a training method (ValueError if its name is taken, unless replace, or it is invalid)."""
    return REGISTRY.register(method, replace)


def unregister(name: str) -> None:
    """Remove a method (tests that registered a toy one); unknown names are ignored."""
    REGISTRY.unregister(name)


def names() -> tuple[str, ...]:
    """Every registered method, in listing order (RSupCon first, then the baselines)."""
    return tuple(REGISTRY.names())


def get(name: Any) -> Method:
    """The method called `name`; ValueError naming it and the known ones otherwise."""
    return REGISTRY.get(name)


def find(name: Any) -> Method | None:
    """The method called `name`, or None."""
    return REGISTRY.find(name)


# The registry read now (a toy method registered by a test is included), under the names the code
# has always imported: METHODS, METHOD_INFO, CONTRASTIVE, ROBUST, LABELS.
def __getattr__(name: str) -> Any:
    if name == "METHODS":
        return names()
    if name == "METHOD_INFO":
        return {n: get(n) for n in names()}
    if name == "CONTRASTIVE":
        return tuple(n for n in names() if get(n).contrastive)
    if name == "ROBUST":
        return tuple(n for n in names() if get(n).robust)
    if name == "LABELS":
        return {n: get(n).label for n in names()}
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# the shipped model zoo, in the order scripts/train_zoo.sh trains it (METHODS=... there picks others)
ZOO: tuple[str, ...] = ("rsupcon", "pgd_at", "ce", "trades", "supcon")

_PRESETS = (
    # seconds on a laptop CPU: for tests and a first look at the pipeline
    Preset("smoke", "seconds; checks the pipeline, learns nothing", "smoke (seconds, learns nothing)", "smoke",
           dict(width=16, epochs=1, batch_size=32, subset=64, attack_steps=2, probe_epochs=1,
                probe_batch_size=64, val_n=32, val_robust_n=16, ncm_n=64, synthetic_n=64, log_every=1)),
    # the app's training jobs (rsupcon ~5 min, pgd_at ~2-3 min, ce < 1 min on an idle 2-core CPU)
    Preset("short", "minutes on a 2-core CPU", "short (minutes on a CPU)", "cpu-preview",
           dict(width=16, epochs=2, batch_size=128, subset=2000, attack_steps=3, probe_epochs=3,
                probe_batch_size=256, val_n=500, val_robust_n=100, ncm_n=1000, log_every=2)),
    # scripts/train_zoo.sh gpu, docs/GPU_RUN.md: width 32, batch 512, PGD-10, cosine schedule
    Preset("gpu12", "about 12 minutes on one H200, five models at once", "gpu12 (minutes on a big GPU)",
           "gpu-short", dict(epochs=8, schedule="cosine", probe_epochs=5, val_robust_n=500, log_every=20)),
    # paper-like but shorter than the paper's 200 epochs: the TrainConfig defaults
    Preset("full", "hours; for a GPU", "full (hours, for a GPU)", "full"),
)
PRESET_INFO: dict[str, Preset] = {p.name: p for p in _PRESETS}
PRESETS: dict[str, dict] = {p.name: p.values for p in _PRESETS}
STATUS: dict[str, str] = {p.name: p.status for p in _PRESETS}


def datasets() -> tuple[str, ...]:
    """The data sets a run may train on (TrainConfig.dataset, --dataset): every registered one."""
    return tuple(dataset_registry.names())
