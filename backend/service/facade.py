"""The one facade the UI needs: plain data in, plain data (numpy arrays, dicts, ids) out.

Contract: docs/ARCHITECTURE.md and the operations' declarations (backend.service.api: every operation's
signature, defaults and docstring, written once; the Service runs each by `dispatch`, and
backend/transport/client.py's clients and the server follow the same declarations). Every bad input
raises ValueError naming the value; unknown ids raise NotFoundError (a ValueError). Image ids:
"samples:<i>", "test:<i>", "train:<i>", "upload:<hex16>", optionally after the name of a registered
data set, "<dataset>/": "imagenet/samples:3", "cifar100/test:12"; an id that names
none means cifar10, so every id before data sets keeps its meaning.

Any model on any image: an image whose side differs from a model's input size (its card's input_size)
is resized for that model (bilinear, antialiased; backend.service.engine.Engine.model_input), and its
true label is used only when the image is of the model's data set (else the model's clean prediction,
as for uploads). So results come back at the model's input size: probabilities for its classes, the
adversarial image and perturbation at the size of the model the attack was crafted on, saliency maps,
feature-lens images and class visualisations at the explained model's size. Many-image analyses (embed,
robustness_curve) read `source` of the models' data set unless it names one ("imagenet/samples"); a
robustness curve needs images of the models' own data set.

Sharing: one Service serves every user (Streamlit sessions, FastAPI worker threads). Models are
loaded lazily once per (id, weights sha, device), frozen, kept in an LRU; the checkpoint store re-reads the
cards every few seconds so a model finished by a job appears without a restart. Heavy work takes a
per-device lock (two threads on a 2-core CPU only slow each other down) and its results are cached
in bounded LRUs keyed by (model id + weights sha, image id, normalised parameters); cached arrays
are read-only and cached dicts are copied on the way out, so no caller can corrupt the cache.

Choices the contract leaves open (documented for the app):
- attacks use the image's true label when it has one, else the model's clean prediction;
  "success" is the attack's own criterion, "flipped" means the predicted class changed;
  "clean"/"adv" entries of an attack list the top 5 classes;
- saliency maps explain each input's own predicted class unless a target is given;
- sanity_check: "similarity" is a list, one Spearman correlation per cascade stage (see its docstring);
- times in job dicts are Unix seconds (float).

Built by composition: an Engine (backend.service.engine: stores, device lock, caches, batching) shared
by ImageAnalyses (backend.service.inspection: one image) and BatchAnalyses (backend.service.analyses:
many images); the Service holds them, and each operation's declared impl names the method that does
its work ("image_analyses.attack"). Training jobs: backend.service.jobs.

Additions to the contract (nothing was renamed or removed):
- Service(..., job_data=None, max_tasks=2, threads=None); Service.clear_caches(); Service.close();
- saliency_metrics adds "centered_alignment" and "fractions"; robustness_curve adds "flip_eps";
  sanity_check adds "topk_overlap", "heatmap", "heatmaps_random";
- job config also takes "seed"; keys left out (or None) take the preset's value; presets smoke, short,
  full; job dicts add "device", "pid", "attempts", "exit_code"; job_events items carry "seq";
- a cancelled in-process robustness_curve/embed/class_visualisation/corruption_curve raises errors.Cancelled;
- corruption_view (one image under the 15 corruptions x 5 severities: each model's prediction and
  saliency) and corruption_curve (accuracy against severity; also a task kind); limits()["corruptions"];
- HttpClient raises PermissionError for 401 (token) and RuntimeError for 5xx;
- sharing (backend.service.flight): work runs under the caller's scope; a cancelled scope (a disconnected HTTP
  client, a cancelled task) raises errors.Cancelled at the next batch; background tasks queue for the
  device behind interactive calls; errors.BusyError (not a ValueError) when the device queue is full
  or every task worker is busy (tasks.TasksBusy), which HttpClient also raises for a 429; identical
  concurrent calls are computed once;
- capabilities() (the registries and bounds, computed once per service; limits() is capabilities() and
  "topk"); saliency_maps (several models' maps on one requested scale); Service.validate(kind, args);
  start_task fills a task's left-out parameters with the declared defaults.
"""
from __future__ import annotations

import copy
import logging
import operator
import os
import threading
from collections import defaultdict
from pathlib import Path

import torch

from backend import attacks
from backend.core.checkpoints import default_root
from backend.core.errors import short
from backend.core.runtime import torch_threads
from backend.core.uploads import UploadLimits
from backend.explain import embed as embed_mod
from backend.explain import lens
from backend.explain import saliency as saliency_lib
from backend.service import api, flight, model_imports
from backend.service import jobs as jobs_mod
from backend.service.analyses import BatchAnalyses
from backend.service.corruption_views import CorruptionAnalyses
from backend.service.corruption_views import describe as describe_corruptions
from backend.service.engine import Caches, Engine
from backend.service.inspection import ImageAnalyses
from backend.service.stores import DEFAULT_DATASET, THUMB_MAX_N, THUMB_SIDES, CheckpointStore, ImageStore
from backend.service.tasks import TaskRunner

log = logging.getLogger(__name__)


def warm_up_enabled() -> bool:
    """Whether the app and the server warm the service up at start (ROBUSTLENS_WARM_UP=0: no)."""
    return os.environ.get("ROBUSTLENS_WARM_UP", "1") != "0"

# One fair lock per device, shared by all Services (and so by the app's sessions and the server's
# requests): interactive work goes before background batches, sessions take turns (backend.service.flight).
_DEVICE_LOCKS: dict[str, flight.FairLock] = defaultdict(flight.FairLock)


class Service(api.Api):
    """See the module docstring. checkpoint_root: folder of checkpoints (default
    $ROBUSTLENS_CHECKPOINTS or <repo>/checkpoints); data_root: the data root (default
    backend.core.data.resolve_root()): an ImageFolder tree or torchvision root whose test/train splits
    serve the data set it holds (the offline samples need none); device: "cpu"/"cuda" (default cuda when available);
    jobs_root: where job records live (default <checkpoint_root>/.jobs); job_data: the trainer's
    --data (default $ROBUSTLENS_JOB_DATA, else data_root; "synthetic" for tests); threads: torch CPU
    threads (default $ROBUSTLENS_THREADS, else every core)."""

    MAX_EMBED_N = 2000
    MAX_CURVE_N = {"cpu": 1000, "cuda": 10000}
    MAX_EPS_VALUES = 12

    def __init__(self, checkpoint_root=None, data_root=None, device=None, jobs_root=None, *,
                 job_data: str | None = None, max_tasks: int = 2, threads: int | None = None):
        self.device = str(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        if self.device.split(":")[0] not in ("cpu", "cuda"):
            raise ValueError(f"device must be 'cpu' or 'cuda[:i]', got {short(device)}")
        if self.device.startswith("cpu"):
            # ROBUSTLENS_THREADS: fewer threads than cores keeps latency steady when the CPU is shared
            # (a training job, other services); oversubscribed OpenMP threads stall each other.
            torch.set_num_threads(torch_threads(threads, env="ROBUSTLENS_THREADS"))
        self.root = Path(checkpoint_root) if checkpoint_root else default_root()
        self.data_root = data_root
        self.models = CheckpointStore(self.root, self.device)
        self.images = ImageStore(data_root)
        self.lock = _DEVICE_LOCKS[self.device]
        self.tasks = TaskRunner(max_running=max_tasks)
        # ROBUSTLENS_JOB_DATA lets a deployment (or the app's tests: "synthetic") choose the trainer's data
        # without code: make_client() builds the Service with no arguments.
        if job_data is None:
            job_data = os.environ.get("ROBUSTLENS_JOB_DATA") or None
        self._jobs_root, self._job_data = jobs_root, job_data if job_data is not None else data_root
        self._jobs = None
        self._capabilities_cache: dict | None = None
        self._capabilities_lock = threading.Lock()
        self.caches = Caches()
        self.engine = Engine(self.models, self.images, self.lock, self.device, self.caches)
        self.image_analyses = ImageAnalyses(self.engine)
        self.batch_analyses = BatchAnalyses(
            self.engine, self.root, max_embed_n=self.MAX_EMBED_N, max_eps_values=self.MAX_EPS_VALUES,
            max_curve_n=self.MAX_CURVE_N.get(self.device.split(":")[0], 1000))
        self.corruption_analyses = CorruptionAnalyses(
            self.engine, self.batch_analyses, max_curve_n=self.MAX_CURVE_N.get(self.device.split(":")[0], 1000))

    def warm_up(self, background: bool = True):
        """Pay first-use costs before a user waits for them: UMAP's numba JIT (10-25 s on a CPU) and
        the refit of every installed model's stored reference map, which the embedding explorer
        needs to place adversarial points in that map. background=True runs it in a daemon thread
        and returns the thread (it holds no device lock, so requests are served meanwhile); False
        runs it here and returns None. Failures are logged, never raised: it only saves time."""
        def work():
            try:
                embed_mod.warm_up()
                for card in self.models.cards():
                    ref = embed_mod.load_reference(self.root / card["id"])
                    if ref is not None:
                        self.caches.embedders.get(ref)
            except Exception:
                log.warning("warm-up failed", exc_info=True)

        if not background:
            work()
            return None
        t = threading.Thread(target=work, name="robustlens-warm-up", daemon=True)
        t.start()
        return t

    def clear_caches(self) -> None:
        """Forget every cached result (benchmarks measure cold calls; models stay loaded)."""
        self.caches.clear()

    def close(self) -> None:
        self.tasks.shutdown()
        if self._jobs is not None:
            self._jobs.close()

    # ---- the operations (backend.service.api: each declared once, its defaults there) ----------
    def dispatch(self, op: api.Operation, args: dict):
        """Run the declared operation `op` with `args` (every parameter, defaults filled in): its impl,
        a dotted path from this Service ("image_analyses.attack") or a callable f(service, **args)."""
        if callable(op.impl):
            return op.impl(self, **args)
        return operator.attrgetter(op.impl)(self)(**args)

    def _list_models(self) -> list[dict]:
        return [copy.deepcopy(c) for c in self.models.cards()]  # callers may edit them; the store's stay

    def _model_card(self, model_id: str) -> dict:
        return copy.deepcopy(self.models.card(model_id))

    def _start_task(self, kind: str, params: dict) -> str:
        """Validate now (ValueError), then run in the background (tasks.TasksBusy beyond max_tasks)."""
        if kind not in api.task_kinds():
            raise ValueError(f"unknown task kind {short(kind)}; known: {', '.join(api.task_kinds())}")
        kw = {k: v for k, v in api.get(kind).from_params(params).items() if k not in api.HOOKS}
        self.validate(kind, kw)  # the caller may reuse its dict; the task keeps its own (kw)
        fn = getattr(self, kind)
        return self.tasks.start(kind, kw, lambda progress, should_stop: fn(
            **kw, progress=progress, should_stop=should_stop))

    def validate(self, kind: str, p: dict) -> None:
        """The cheap checks of an operation's arguments `p` (every parameter, as Operation.bind gives
        them), so that a task or a long synchronous call fails at once, not in its thread."""
        if kind == "import_model":
            model_imports.validate(self.root, p)
        elif kind == "corruption_curve":
            self.corruption_analyses.curve_args(p["model_ids"], p["corruptions"], p["n"], p["source"], p["seed"])
        elif kind == "corruption_view":
            self.corruption_analyses.view_args(p["image_id"], p["model_ids"], p["corruptions"], p["severities"],
                                               p["saliency"], p["seed"])
        else:
            self.batch_analyses.validate_task(kind, p)

    def _import_model(self, source: str, name: str, dataset, threat_model: str, pretrained: bool, model_id,
                      progress=None, should_stop=None) -> dict:
        """Import a published model by name (backend.service.model_imports) into this service's checkpoints
        folder; returns {"model_id", "card"}; the model is listed at once."""
        out = model_imports.run(self.root, progress=progress, should_stop=should_stop, source=source, name=name,
                                dataset=dataset, threat_model=threat_model, pretrained=pretrained,
                                model_id=model_id)
        self.models.cards(force=True)
        return out

    def _cancel_task(self, task_id: str) -> dict:
        return self.tasks.cancel(task_id, wait_s=2.0)

    # ---- training jobs (backend/service/jobs.py) ---------------------------------------------------
    @property
    def jobs(self) -> jobs_mod.JobManager:
        if self._jobs is None:
            self._jobs = jobs_mod.JobManager(self.root, data=self._job_data, device=self.device,
                                             jobs_dir=self._jobs_root)
        return self._jobs

    # ---- capabilities and limits -------------------------------------------------------------
    def _limits(self) -> dict:
        return {**self._capabilities(),
                "topk": [1, min((int(c["num_classes"]) for c in self.models.cards()), default=10)]}

    def _capabilities(self) -> dict:
        with self._capabilities_lock:
            if self._capabilities_cache is None:
                self._capabilities_cache = self._describe()
            return copy.deepcopy(self._capabilities_cache)  # callers may edit theirs

    def _describe(self) -> dict:
        from backend.core import archs as arch_registry
        from backend.core import datasets as ds_registry
        from backend.train import config as train_config  # torch-free registry of presets

        up = UploadLimits() if self.images.upload_limits is None else self.images.upload_limits
        # attacks and saliency methods: their registries (labels, parameters with range/default/step, norms)
        return {"attack": attacks.describe(),
                "embed": {"max_n": self.MAX_EMBED_N, "min_n_umap": 5, "methods": list(embed_mod.EMBED_METHODS)},
                "curve": {"max_n": self.MAX_CURVE_N.get(self.device.split(":")[0], 1000),
                          "max_eps_values": self.MAX_EPS_VALUES,
                          "methods": [n for n in attacks.registry.names() if attacks.registry.get(n).curve],
                          "max_steps": attacks.MAX_STEPS},
                "lens": {**lens.LENS_LIMITS, "norms": list(lens.LENS_NORMS), "defaults": {
                    "norm": lens.LENS_DEFAULTS["norm"], "steps": lens.LENS_DEFAULTS["steps"],
                    "eps": dict(lens.LENS_DEFAULTS["eps"])}},
                "corruptions": describe_corruptions(self.MAX_CURVE_N.get(self.device.split(":")[0], 1000)),
                "saliency": saliency_lib.describe(),
                "images": {"list_limit": [1, 500], "sources": ["samples", "test", "train"],
                           "default_dataset": DEFAULT_DATASET,
                           "thumbnails": {"max_n": THUMB_MAX_N, "side": list(THUMB_SIDES)}},
                "upload": {"max_bytes": up.max_bytes, "max_pixels": up.max_pixels, "min_side": up.min_side},
                # the training registry as the Train page shows it (method titles, preset labels, uses and
                # values: backend.train.config.describe), and the data sets a job can train on here
                "jobs": {**jobs_mod.LIMITS, **train_config.describe(),
                         "datasets": jobs_mod.trainable_datasets(self._job_data),
                         "synthetic_data": self._job_data == "synthetic"},  # else jobs need the train split
                "tasks": {"max_running": self.tasks.max_running, "kinds": api.task_kinds()},
                # the dataset and architecture registries: classes, image size, class colours; labels, defaults
                "datasets": {n: ds_registry.get_dataset(n).describe() for n in ds_registry.names()},
                "architectures": {n: arch_registry.describe(n) for n in arch_registry.names()},
                "imports": model_imports.describe(),
                "device": self.device}
