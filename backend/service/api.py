"""Every operation of the service, declared once: this module's `Api` class.

Each operation is one method of `Api` written with `@operation(...)`: its signature is the request
(parameter names, types with their wire caps, and the defaults: the only place a default is written),
its return annotation the response type, its docstring the contract, and the decorator says how it
travels and what it costs:
- verb, path: its HTTP route (None: no route; the operation runs as a task only);
- cost: LIGHT (no device work: stores, task and job bookkeeping), INTERACTIVE (one image, on the device
  before background work) or BACKGROUND (many images; the fair lock serves interactive work first);
- impl: where the Service finds the work, a dotted path from the Service ("image_analyses.attack") or a
  callable f(service, **arguments) (an operation declared outside this module, see `Api.add`);
- task: start_task(name, params) may run it in the background (it takes progress / should_stop);
- budget: a synchronous HTTP call is first checked against the request deadline (backend.service.budget);
- raw: the parameter sent as the raw request body (the upload's bytes); wrap: the HTTP answer carries
  the result under this key ({"log": ...}); retries: how many times an HTTP 429 is retried.

From the declaration follow, with nothing written again: the Service's methods (backend.service.facade:
`Service.dispatch` runs the impl), the FastAPI routes and their pydantic bodies (backend.transport.server
builds them from `operations()`; the OpenAPI schema stays typed), the HttpClient and InProcessClient
(backend.transport.client) and the app's clients (app.session.client). Every one of them is an `Api`
whose `dispatch(op, arguments)` says how it runs an operation; a call `client.attack(...)` binds the
arguments to the declared signature (the defaults filled in) and hands them to `dispatch`.

Adding an operation: one module in backend/service/operations/ declares it with `@Api.add @operation(...)`
and a callable impl (its work; torch imported inside it, so that the module stays torch-free), and
its page calls `backend().<name>(...)`; tests/test_operations.py shows it (docs/ARCHITECTURE.md counts
the files). The built-in operations below name their work by a dotted path instead.

Torch-free (the app imports it in HTTP mode); pydantic is imported only to build request bodies.
"""
# No `from __future__ import annotations`: the signatures' annotations are read as objects (pydantic
# bodies, FastAPI query parameters).
import functools
import inspect
import typing
from dataclasses import dataclass, field
from typing import Annotated, Any, Callable, Literal, TypeVar

from pydantic import Field

LIGHT, INTERACTIVE, BACKGROUND = "light", "interactive", "background"
COSTS = (LIGHT, INTERACTIVE, BACKGROUND)
HOOKS = ("progress", "should_stop")  # a task's in-process callbacks: never on the wire

# Wire types: the length caps and the examples the OpenAPI schema shows (the shipped zoo's ids and an
# offline sample let a schema fuzzer reach the real work). In Python they are plain str / list / dict.
Id = Annotated[str, Field(max_length=200)]
ImageId = Annotated[str, Field(max_length=200, examples=["samples:3"])]
ModelId = Annotated[str, Field(max_length=200, examples=["ce"])]
Ids = Annotated[list[Id], Field(max_length=64, examples=[["ce", "pgd_at"]])]
Name = Annotated[str, Field(max_length=64)]
Names = Annotated[list[Name], Field(max_length=16, examples=[["fog", "gaussian_noise"]])]
Params = Annotated[dict, Field(max_length=32)]
# the service caps the count (2000) and the side with a 400 naming them; this cap only bounds the body
ThumbIds = Annotated[list[Id], Field(max_length=4096, examples=[["samples:3", "samples:4"]])]
EpsList = Annotated[list[float], Field(max_length=64)]
Severities = Annotated[list[int], Field(max_length=5)]
Progress = Callable[[int, int], None] | None
StopCheck = Callable[[], bool] | None

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class Operation:
    """One operation as declared (see the module docstring)."""

    name: str
    verb: str | None
    path: str | None
    cost: str
    impl: str | Callable[..., Any]
    task: bool = False
    budget: bool = False
    raw: str | None = None
    wrap: str | None = None
    retries: int | None = None
    signature: inspect.Signature = field(default_factory=inspect.Signature)
    hints: dict = field(default_factory=dict)
    doc: str = ""

    @property
    def path_params(self) -> tuple[str, ...]:
        """Parameters named in the route's path ("/models/{model_id}")."""
        return tuple(p for p in self.wire_params
                     if self.path and ("{" + p + "}" in self.path or "{" + p + ":" in self.path))

    @property
    def wire_params(self) -> tuple[str, ...]:
        """Every parameter that travels (the hooks do not)."""
        return tuple(p for p in self.signature.parameters if p not in HOOKS)

    def defaults(self) -> dict:
        return {k: p.default for k, p in self.signature.parameters.items()
                if p.default is not inspect.Parameter.empty}

    def bind(self, args: tuple = (), kwargs: dict | None = None) -> dict:
        """Every parameter's value for a call op(*args, **kwargs): the declared defaults filled in.
        A call that does not fit the signature is a TypeError, as for any Python function."""
        bound = self.signature.bind(*args, **(kwargs or {}))
        bound.apply_defaults()
        return dict(bound.arguments)

    def from_params(self, params: dict) -> dict:
        """The arguments of a task's `params` (keyword arguments, as start_task takes them): defaults
        filled in; ValueError naming an unknown or a missing parameter."""
        if not isinstance(params, dict):
            raise ValueError(f"{self.name} params must be a dict, got {type(params).__name__}")
        known = [p for p in self.signature.parameters if p not in HOOKS]
        unknown = sorted(set(params) - set(known))
        if unknown:
            raise ValueError(f"unknown {self.name} params {unknown}; known: {sorted(known)}")
        missing = [p for p in known if p not in params
                   and self.signature.parameters[p].default is inspect.Parameter.empty]
        if missing:
            raise ValueError(f"{self.name} needs {', '.join(missing)}")
        return self.bind((), params)

    def body_model(self):
        """The pydantic model of the JSON body (POST routes): the wire parameters not in the path, strict
        (true/false are not integers) and closed (unknown keys are refused). Built once."""
        return _body_model(self)


_OPERATIONS: dict[str, Operation] = {}


EXTENSIONS = "backend.service.operations"  # a folder of modules, each declaring operations with Api.add
_discovered = False


def operations() -> dict[str, Operation]:
    """Every declared operation by name, in declaration order (the routes' order): this module's, then
    those of the modules in backend/service/operations/ (imported on the first call)."""
    global _discovered
    if not _discovered:
        _discovered = True
        import importlib
        import pkgutil

        package = importlib.import_module(EXTENSIONS)
        for m in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name):
            importlib.import_module(f"{EXTENSIONS}.{m.name}")
    return dict(_OPERATIONS)


def get(name: str) -> Operation:
    """The operation called `name`; ValueError naming the known ones."""
    ops = operations()
    try:
        return ops[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown operation {str(name)[:60]!r}; known: {', '.join(ops)}") from None


def task_kinds() -> list[str]:
    """The operations start_task runs."""
    return [n for n, op in operations().items() if op.task]


def operation(verb: str | None, path: str | None, *, cost: str, impl: str | Callable[..., Any],
              task: bool = False, budget: bool = False, raw: str | None = None, wrap: str | None = None,
              retries: int | None = None) -> Callable[[F], F]:
    """Declare the decorated method as an operation (see the module docstring); the method's body
    never runs: a call binds its arguments and hands them to `self.dispatch`."""
    if cost not in COSTS:
        raise ValueError(f"cost must be one of {COSTS}, got {cost!r}")
    if (verb is None) != (path is None) or verb not in (None, "GET", "POST"):
        raise ValueError(f"an operation has a GET or POST route with a path, or neither; got {verb!r} {path!r}")

    def declare(fn: F) -> F:
        sig = inspect.signature(fn)
        params = list(sig.parameters.values())[1:]  # without self
        hints = typing.get_type_hints(fn, include_extras=True)
        op = Operation(fn.__name__, verb, path, cost, impl, task, budget, raw, wrap, retries,
                       sig.replace(parameters=params), {k: hints[k] for k in (p.name for p in params) if k in hints},
                       inspect.getdoc(fn) or "")
        if task and not all(h in op.signature.parameters for h in HOOKS):
            raise ValueError(f"task operation {op.name} must take {HOOKS}")

        @functools.wraps(fn)
        def call(self, *args, **kwargs):
            return self.dispatch(op, op.bind(args, kwargs))

        call.operation = op  # type: ignore[attr-defined]
        if op.name in _OPERATIONS:
            raise ValueError(f"operation {op.name!r} is declared already")
        _OPERATIONS[op.name] = op
        return typing.cast(F, call)

    return declare


_BODIES: dict[int, tuple[Operation, Any]] = {}  # id(op) -> (op, its body model); op kept alive with it


def _body_model(op: Operation):
    if id(op) not in _BODIES:
        from pydantic import ConfigDict, create_model

        fields: dict[str, Any] = {}
        for p in op.wire_params:
            if p in op.path_params or p == op.raw:
                continue
            default = op.signature.parameters[p].default
            fields[p] = (op.hints.get(p, Any), ... if default is inspect.Parameter.empty else default)
        title = "".join(w.capitalize() for w in op.name.split("_")) + "Body"
        _BODIES[id(op)] = (op, create_model(title, __config__=ConfigDict(extra="forbid", strict=True), **fields))
    return _BODIES[id(op)][1]


class Api:
    """The service's operations. A subclass says how one runs (`dispatch`): the Service does the work,
    the clients send it in-process or over HTTP, the app's clients add its sessions and error boundary."""

    def dispatch(self, op: Operation, args: dict) -> Any:
        """Run `op` with `args` (every parameter, defaults filled in)."""
        raise NotImplementedError(f"{type(self).__name__} cannot run {op.name}")

    @classmethod
    def add(cls, fn: Callable[..., Any]) -> Callable[..., Any]:
        """Add an operation declared outside this class (a function written with @operation, taking
        self first, with a callable impl) to every Api: its routes appear in servers created after."""
        op = getattr(fn, "operation", None)
        if not isinstance(op, Operation):
            raise ValueError("Api.add takes a function declared with @operation")
        if hasattr(Api, op.name) or not callable(op.impl):
            raise ValueError(f"operation {op.name!r}: Api.add takes a new name and a callable impl")
        setattr(Api, op.name, fn)
        return fn

    @classmethod
    def remove(cls, name: str) -> None:
        """Take back an operation that Api.add added (servers created after have no route for it)."""
        op = getattr(Api.__dict__.get(name), "operation", None)
        if not isinstance(op, Operation) or isinstance(op.impl, str):
            raise ValueError(f"{name!r} is not an added operation")
        delattr(Api, name)
        del _OPERATIONS[name]

    # ---- models and images -----------------------------------------------------------------
    @operation("GET", "/models", cost=LIGHT, impl="_list_models")
    def list_models(self) -> list[dict]:
        """Every model's card (rsupcon first), without loading weights."""
        raise NotImplementedError

    @operation("GET", "/models/{model_id}", cost=LIGHT, impl="_model_card")
    def model_card(self, model_id: str) -> dict:
        """One model's card; NotFoundError naming the known ids."""
        raise NotImplementedError

    @operation("GET", "/images/sources", cost=LIGHT, impl="images.sources")
    def image_sources(self, dataset: str | None = None) -> dict:
        """{"samples"|"test"|"train": {"available": bool, "count": int, "message": str}} of a data set
        (default cifar10; an unknown name is a ValueError naming the known ones)."""
        raise NotImplementedError

    @operation("GET", "/classes", cost=LIGHT, impl="images.classes_of")
    def classes(self, dataset: str | None = None) -> list[str]:
        """A data set's class names in label order (default cifar10)."""
        raise NotImplementedError

    @operation("GET", "/images", cost=LIGHT, impl="images.list")
    def list_images(self, source: str = "samples", class_name: str | None = None, offset: int = 0,
                    limit: int = 48, dataset: str | None = None) -> dict:
        """{"total": int, "items": [{"image_id", "label", "class_name"}]} (limit 1..500) of one source of
        a data set (default cifar10, whose ids name no data set: "samples:3"; others' do: "imagenet/samples:3")."""
        raise NotImplementedError

    @operation("GET", "/random_image", cost=LIGHT, impl="images.random")
    def random_image(self, source: str = "samples", class_name: str | None = None, seed: int | None = None,
                     dataset: str | None = None) -> dict:
        """A random image of a source (seeded: the same seed, the same image), as get_image returns it."""
        raise NotImplementedError

    @operation("POST", "/images/upload", cost=LIGHT, impl="images.upload", raw="data")
    def upload_image(self, data: bytes, dataset: str | None = None) -> dict:
        """Decode an uploaded file (the raw request body over HTTP) to the data set's image size, S x S
        RGB (UploadError, a ValueError, when unusable); the id names the data set unless it is the default one."""
        raise NotImplementedError

    @operation("POST", "/images/thumbnails", cost=LIGHT, impl="images.thumbnails")
    def thumbnails(self, image_ids: ThumbIds, side: int = 32) -> dict:
        """{"pixels": uint8 (n, side, side, 3)}, the images of `image_ids` in that order at side x side
        (n <= 2000, side 8..96; downscaled by area averaging, upscaled by repeating pixels): many small
        pictures in one call. ValueError for a bad list or side, NotFoundError for an unknown id."""
        raise NotImplementedError

    @operation("GET", "/images/{image_id:path}", cost=LIGHT, impl="images.get")  # an id may name its data set
    def get_image(self, image_id: str) -> dict:
        """{"image_id", "dataset", "label": int|None, "class_name": str|None, "pixels": uint8 (S,S,3)},
        S the image size of the data set the id names."""
        raise NotImplementedError

    # ---- analyses: one image (backend.service.inspection) ---------------------------------
    @operation("POST", "/predict", cost=INTERACTIVE, impl="image_analyses.predict")
    def predict(self, image_id: ImageId, model_ids: Ids | None = None, topk: int = 5) -> dict:
        """{"image_id", "results": {model_id: {"probs": float32 (C,), "pred", "top": topk best}}}."""
        raise NotImplementedError

    @operation("POST", "/attack", cost=INTERACTIVE, impl="image_analyses.attack")
    def attack(self, image_id: ImageId, spec: Params, model_ids: Ids | None = None,
               mode: Literal["whitebox", "transfer"] = "whitebox", source_model: Id | None = None,
               saliency: Name | None = None, target: int | None = None) -> dict:
        """One attack on one image for each model (white-box), or crafted on source_model and shown to
        every model (transfer); with `saliency`, each model's maps of the clean and adversarial image
        (backend.service.inspection.ImageAnalyses.attack)."""
        raise NotImplementedError

    @operation("POST", "/explain", cost=INTERACTIVE, impl="image_analyses.explain")
    def explain(self, image_id: ImageId, model_id: ModelId, method: Name = "integrated_gradients",
                target: int | None = None, spec: Params | None = None, params: Params | None = None) -> dict:
        """One model's saliency map of the image (or of its adversarial twin under `spec`)."""
        raise NotImplementedError

    @operation("POST", "/saliency_maps", cost=INTERACTIVE, impl="image_analyses.saliency_maps")
    def saliency_maps(self, image_id: ImageId, model_ids: Ids | None = None, method: Name = "integrated_gradients",
                      spec: Params | None = None, scale: Literal["map", "shared"] = "map") -> dict:
        """The saliency maps a page draws for several models in one call: each model's map of the clean
        image and, with `spec`, of the adversarial image crafted on it, as heat in [0, 1] on `scale`:
        "map" (each map over its own top) or "shared" (one top, the largest map's, for every map here,
        so brightness compares across models and images). {"method", "scale", "top": the shared top or
        None, "results": {model_id: {"clean", "adv" (H,W) float32 or None, "target_clean", "target_adv",
        "peak": the model's own top over the shared one (1.0 per map)}}}."""
        raise NotImplementedError

    @operation("POST", "/saliency_metrics", cost=INTERACTIVE, impl="image_analyses.saliency_metrics")
    def saliency_metrics(self, image_id: ImageId, model_id: ModelId, method: Name = "integrated_gradients",
                         spec: Params | None = None) -> dict:
        """How a model's map moves under the attack `spec` (rank correlations, top-k overlap...)."""
        raise NotImplementedError

    @operation("POST", "/sanity_check", cost=INTERACTIVE, impl="image_analyses.sanity_check")
    def sanity_check(self, image_id: ImageId, model_id: ModelId, method: Name = "gradient") -> dict:
        """The cascading randomisation check of one map ("similarity": one Spearman correlation per stage)."""
        raise NotImplementedError

    # ---- analyses: many images (backend.service.analyses) ---------------------------------
    @operation("POST", "/embed", cost=BACKGROUND, impl="batch_analyses.embed", task=True, budget=True)
    def embed(self, model_id: ModelId, n: int = 500, spec: Params | None = None, method: Name = "umap",
              seed: int = 0, source: Name = "test", progress: Progress = None, should_stop: StopCheck = None,
              ) -> dict:
        """A 2-D map of a model's features of n images (UMAP or PCA), with adversarial points under `spec`."""
        raise NotImplementedError

    @operation("POST", "/robustness_curve", cost=BACKGROUND, impl="batch_analyses.robustness_curve", task=True,
               budget=True)
    def robustness_curve(self, model_ids: Ids | None = None, method: Name = "pgd", eps_list: EpsList | None = None,
                         n: int = 100, steps: int = 10, source: Name = "test", seed: int = 0,
                         progress: Progress = None, should_stop: StopCheck = None) -> dict:
        """Accuracy against eps for each model over n images."""
        raise NotImplementedError

    @operation("POST", "/corruption_view", cost=INTERACTIVE, impl="corruption_analyses.corruption_view",
               budget=True)
    def corruption_view(self, image_id: ImageId, model_ids: Ids | None = None, corruptions: Names | None = None,
                        severities: Severities | None = None, saliency: Name | None = None, seed: int = 0) -> dict:
        """One image under the common corruptions and severities: each model's prediction (and saliency)."""
        raise NotImplementedError

    @operation("POST", "/corruption_curve", cost=BACKGROUND, impl="corruption_analyses.corruption_curve", task=True,
               budget=True)
    def corruption_curve(self, model_ids: Ids | None = None, corruptions: Names | None = None, n: int = 100,
                         source: Name = "test", seed: int = 0, progress: Progress = None,
                         should_stop: StopCheck = None) -> dict:
        """Accuracy against severity for each model and corruption over n images."""
        raise NotImplementedError

    @operation("POST", "/feature_lens", cost=INTERACTIVE, impl="batch_analyses.feature_lens")
    def feature_lens(self, image_id: ImageId, target_class: int, model_ids: Ids | None = None,
                     eps: float | None = None, steps: int = 60, norm: Name = "linf") -> dict:
        """The image pushed toward `target_class` within eps (each model's own drawing of that class)."""
        raise NotImplementedError

    @operation("POST", "/class_visualisation", cost=BACKGROUND, impl="batch_analyses.class_visualisation", task=True,
               budget=True)
    def class_visualisation(self, target_class: int, model_ids: Ids | None = None, steps: int = 100, seed: int = 0,
                            progress: Progress = None, should_stop: StopCheck = None) -> dict:
        """An image grown from noise toward `target_class` for each model."""
        raise NotImplementedError

    @operation(None, None, cost=BACKGROUND, impl="_import_model", task=True)
    def import_model(self, source: Name, name: Id, dataset: Name | None = None, threat_model: Name = "Linf",
                     pretrained: bool = False, model_id: Id | None = None, progress: Progress = None,
                     should_stop: StopCheck = None) -> dict:
        """Import a published model (robustbench, torchvision or timm) as a checkpoint; a task only."""
        raise NotImplementedError

    # ---- background tasks ------------------------------------------------------------------
    @operation("POST", "/tasks", cost=LIGHT, impl="_start_task", wrap="task_id", retries=0)
    def start_task(self, kind: Name, params: Params) -> str:
        """Run a task operation (task_kinds()) in the background with `params` (its keyword arguments);
        returns a task id. Parameters are validated now (ValueError); beyond the running cap BusyError.
        Not retried over HTTP: with every worker busy the caller decides when to try again."""
        raise NotImplementedError

    @operation("GET", "/tasks/{task_id}", cost=LIGHT, impl="tasks.status")
    def task_status(self, task_id: str) -> dict:
        """{"task_id", "kind", "state": running|done|failed|cancelled, "done", "total", "result", "error"}."""
        raise NotImplementedError

    @operation("POST", "/tasks/{task_id}/cancel", cost=LIGHT, impl="_cancel_task")
    def cancel_task(self, task_id: str) -> dict:
        """Ask a task to stop (it notices between batches); waits up to 2 s and returns its status."""
        raise NotImplementedError

    # ---- training jobs (backend.service.jobs) ----------------------------------------------
    @operation("POST", "/jobs", cost=LIGHT, impl="jobs.start_job")
    def start_job(self, config: Params) -> dict:
        """Queue a training job (keys: limits()["jobs"]); returns the job dict."""
        raise NotImplementedError

    @operation("GET", "/jobs", cost=LIGHT, impl="jobs.list_jobs")
    def list_jobs(self) -> list[dict]:
        raise NotImplementedError

    @operation("GET", "/jobs/{job_id}", cost=LIGHT, impl="jobs.job_status")
    def job_status(self, job_id: str) -> dict:
        raise NotImplementedError

    @operation("GET", "/jobs/{job_id}/events", cost=LIGHT, impl="jobs.job_events")
    def job_events(self, job_id: str, since: int = 0) -> list[dict]:
        raise NotImplementedError

    @operation("POST", "/jobs/{job_id}/cancel", cost=LIGHT, impl="jobs.cancel_job")
    def cancel_job(self, job_id: str) -> dict:
        raise NotImplementedError

    @operation("POST", "/jobs/{job_id}/resume", cost=LIGHT, impl="jobs.resume_job")
    def resume_job(self, job_id: str) -> dict:
        raise NotImplementedError

    @operation("GET", "/jobs/{job_id}/log", cost=LIGHT, impl="jobs.job_log", wrap="log")
    def job_log(self, job_id: str, tail: int = 100) -> str:
        raise NotImplementedError

    # ---- what the service can do -----------------------------------------------------------
    @operation("GET", "/capabilities", cost=LIGHT, impl="_capabilities")
    def capabilities(self) -> dict:
        """What this service can do, fixed while it runs: every registry (attacks with their parameters,
        ranges and defaults; saliency methods; corruptions; data sets; architectures; training methods,
        presets and the data sets a job can train on; model sources) and every bound it enforces (sizes,
        counts, caps), and its device. Computed once per service (the file system is read then, not on
        every call); a client may keep it."""
        raise NotImplementedError

    @operation("GET", "/limits", cost=LIGHT, impl="_limits")
    def limits(self) -> dict:
        """What the UI's widgets need in one call: capabilities() and the bounds that follow the models
        installed now ("topk": [1, the fewest classes of any model])."""
        raise NotImplementedError


operations()  # the modules of backend/service/operations/ add theirs now, before any client is used
