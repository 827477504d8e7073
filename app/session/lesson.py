"""The guided Lesson: six steps a teacher presses through in class, each a live view over the installed
models of one data set, and computing them ahead so a class opening the teacher's link waits for nothing.

What each step asks the service for (`requests`) is written once here; the Lesson page
(app/views/lesson.py) makes exactly these calls and `lesson_view` makes them at launch for the home
page's default sample (app.session.prewarm starts it after the default view), so the page's calls
are answered from the service's caches. Steps 1-4 share one call (the attack with saliency), step 5 is
one small PCA map per model over the offline samples, step 6 the Feature lens at its measured defaults.

Torch-free: the app imports it in HTTP mode.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from app.session.home import default_spec, input_side

log = logging.getLogger(__name__)

EMBED_N = 20          # step 5's images: the offline samples (every data set has them; no download)
EMBED_METHOD = "pca"  # linear and instant; no UMAP fit for a class to wait for


@dataclass(frozen=True)
class Step:
    key: str     # the URL's step name
    title: str
    text: str    # the one sentence under the title (the page adds the measured numbers)


STEPS = (
    Step("fool", "An invisible change fools a standard model",
         "A PGD attack moves every pixel by at most a few grey levels, too little to see, and the standard "
         "model's answer changes."),
    Step("hold", "The robust models hold",
         "The same attack on every model. Over many images the adversarially trained models keep their "
         "answer far more often (the PGD-20 accuracy under each name); this image is one draw."),
    Step("change", "What changed, magnified",
         "The change each model's attack made, magnified until it is visible: the same budget, spent "
         "differently on each model."),
    Step("looks", "Where each model looks",
         "Each model's saliency map on the clean image: which pixels its prediction is most sensitive to."),
    Step("embedding", "What the attack does to the embedding",
         "Each model's features of the sample images in 2-D (PCA); a segment joins an image to its attacked "
         "twin, a black cross marks a changed prediction: the longer the segments, the further the attack "
         "moved the model's view of the image."),
    Step("draws", "What a robust model draws for a class",
         "The image pushed hard toward another class under a large L2 budget (the Feature lens's default): "
         "the standard model gets there within a few steps and covers the image in fine speckle; the robust "
         "models climb slowly and paint strokes and blobs, sometimes with the class's shapes."),
)
STEP_KEYS = tuple(s.key for s in STEPS)


def models_of(cards: list[dict], dataset: str) -> list[str]:
    """The lesson's models: every installed model of `dataset`, in registry order."""
    return [c["id"] for c in cards if str(c.get("dataset") or "cifar10") == dataset]


def requests(lim: dict, cards: list[dict], ids: list[str], image_id: str, label: int | None,
             num_classes: int) -> dict:
    """The service calls behind the steps, as plain data: {"attack": (args, kwargs), "embed": {model:
    kwargs}, "lens": (args, kwargs), "target": the lens's target class}. lim: Service.limits()."""
    spec = default_spec(lim.get("attack") or {}, input_side(cards, ids, lim.get("datasets") or {}))
    saliency = (lim.get("saliency") or {}).get("default")
    target = ((int(label) + 1) if label is not None else 1) % max(1, num_classes)
    lens = (lim.get("lens") or {}).get("defaults") or {}
    norm = lens.get("norm", "l2")
    return {"attack": ((image_id, dict(spec), ids), {"saliency": saliency}),
            "embed": {m: {"n": EMBED_N, "spec": dict(spec), "method": EMBED_METHOD, "seed": 0,
                          "source": "samples"} for m in ids},
            # the lens's measured defaults (limits()["lens"]); one the backend did not give takes the operation's
            "lens": ((image_id, target, ids), {k: v for k, v in {
                "eps": (lens.get("eps") or {}).get(norm), "steps": lens.get("steps"), "norm": norm}.items()
                if v is not None}),
            "target": target, "spec": spec, "saliency": saliency}


def lesson_view(client, image_id: str | None = None, dataset: str | None = None) -> dict:
    """Make every step's calls through `client` (in-process or HTTP) for `image_id` (default: the first
    offline sample) so the service's caches hold them; returns {"image_id", "seconds"} ({} without models)."""
    t0 = time.perf_counter()
    cards = client.list_models()
    ds = dataset or (str(cards[0].get("dataset") or "cifar10") if cards else "cifar10")
    ids = models_of(cards, ds)
    if not ids:
        return {}
    if image_id is None:
        items = client.list_images(limit=1, dataset=ds)["items"]
        if not items:
            return {}
        image_id = items[0]["image_id"]
    img = client.get_image(image_id)
    req = requests(client.limits(), cards, ids, image_id, img.get("label"), len(client.classes(ds)))
    args, kw = req["attack"]
    client.attack(*args, **kw)
    for m, kw in req["embed"].items():
        client.embed(m, **kw)
    args, kw = req["lens"]
    client.feature_lens(*args, **kw)
    return {"image_id": image_id, "seconds": time.perf_counter() - t0}
