"""The HTTP server's request bodies (pydantic, strict: true/false are not integers, unknown keys are
refused): one model per POST route that takes JSON, with the length caps and examples the OpenAPI
schema shows. Used by backend.transport.server."""
from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

Id = Annotated[str, Field(max_length=200)]
# examples (the shipped zoo's ids and an offline sample) let a schema fuzzer reach the real work
ImageId = Annotated[str, Field(max_length=200, examples=["samples:3"])]
ModelId = Annotated[str, Field(max_length=200, examples=["ce"])]
Ids = Annotated[list[Id], Field(max_length=64, examples=[["ce", "pgd_at"]])]
Name = Annotated[str, Field(max_length=64)]
Params = Annotated[dict, Field(max_length=32)]


class _Body(BaseModel):
    # strict: true/false are not integers (lax mode would read `"seed": false` as 0)
    model_config = ConfigDict(extra="forbid", strict=True)


class ThumbnailsBody(_Body):
    # the service caps the count (2000) and the side with a 400 naming them; this cap only bounds the body
    image_ids: Annotated[list[Id], Field(max_length=4096, examples=[["samples:3", "samples:4"]])]
    side: int = 32


class PredictBody(_Body):
    image_id: ImageId
    model_ids: Ids | None = None
    topk: int = 5


class AttackBody(_Body):
    image_id: ImageId
    spec: Params
    model_ids: Ids | None = None
    mode: Literal["whitebox", "transfer"] = "whitebox"
    source_model: Id | None = None
    saliency: Name | None = None
    target: int | None = None


class ExplainBody(_Body):
    image_id: ImageId
    model_id: ModelId
    method: Name = "integrated_gradients"
    target: int | None = None
    spec: Params | None = None
    params: Params | None = None


class MetricsBody(_Body):
    image_id: ImageId
    model_id: ModelId
    method: Name = "integrated_gradients"
    spec: Params | None = None


class SanityBody(_Body):
    image_id: ImageId
    model_id: ModelId
    method: Name = "gradient"


class EmbedBody(_Body):
    model_id: ModelId
    n: int = 500
    spec: Params | None = None
    method: Name = "umap"  # the service checks it against embed.EMBED_METHODS (400 naming the known ones)
    seed: int = 0
    source: Name = "test"


class CurveBody(_Body):
    model_ids: Ids | None = None
    method: Name = "pgd"  # the service checks it against the attacks registered for curves
    eps_list: Annotated[list[float], Field(max_length=64)] | None = None
    n: int = 100
    steps: int = 10
    source: Name = "test"
    seed: int = 0


Names = Annotated[list[Name], Field(max_length=16, examples=[["fog", "gaussian_noise"]])]


class CorruptionViewBody(_Body):
    image_id: ImageId
    model_ids: Ids | None = None
    corruptions: Names | None = None  # the service checks the names (400 naming the known ones)
    severities: Annotated[list[int], Field(max_length=5)] | None = None
    saliency: Name | None = None
    seed: int = 0


class CorruptionCurveBody(_Body):
    model_ids: Ids | None = None
    corruptions: Names | None = None
    n: int = 100
    source: Name = "test"
    seed: int = 0


class LensBody(_Body):
    image_id: ImageId
    target_class: int
    model_ids: Ids | None = None
    eps: float | None = None
    steps: int = 60
    norm: Name = "linf"


class VisBody(_Body):
    target_class: int
    model_ids: Ids | None = None
    steps: int = 100
    seed: int = 0


class TaskBody(_Body):
    kind: Name
    params: Params = {}


class JobBody(_Body):
    config: Params
