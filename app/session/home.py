"""The home page's default view: which sample it opens on, what it asks for, and computing it ahead.

The attack lab is the app's home page. Its default view is: the default sample (the rule below, over
the offline samples of the first card's data set and that data set's models), every such model in
registry order, white-box, the attack registry's default attack with its params' default values
(fewer steps for ImageNet-size models: Param.large_default) and the saliency registry's default
method. `default_view(client)` asks for exactly that through any client (in-process or HTTP), so the
service's caches hold it (clean predictions, the adversarial images, saliency) and the first
visitor's identical requests join a computation already under way (the service's single-flight).
The backend server runs it in the background at launch (`python -m backend.transport.server --prewarm`,
whose default names app.session.prewarm's `start`, which runs this and then the Lesson's steps);
the in-process app when its backend client is made. Failures are logged, never raised.

Default sample (a documented rule, not a hand-picked index): among the offline sample images, in
their listed order, the first one that EVERY compared model classifies correctly when clean, so the
page opens on an image where an attack's effect is the only story. When no sample satisfies every
model, the one that the most models get right (ties: the higher smallest true-class probability,
then list order). Without labels (uploads) the first sample.

This is the app's policy, written once: the attack controls' first values (param_default,
default_spec), the default sample (default_sample, default_image: also the image picker's first image,
app.widgets.components.default_image_id) and the views computed ahead. Torch-free and Streamlit-free:
the app imports it in HTTP mode, and the backend server's warm-up runs it through app.session.prewarm.
"""
from __future__ import annotations

import logging
import time

log = logging.getLogger(__name__)

SAMPLES = 20   # offline samples the default rule looks at
BROWSE = 12    # thumbnails on the sidebar browser's first page (app.widgets.components.BROWSE_PAGE)


def default_sample(image_ids: list[str], labels: list[int | None], probs: dict[str, list]) -> str | None:
    """The rule in the module docstring. image_ids / labels: the samples in list order; probs:
    {model id: [per-image class probabilities (C,)]} for the compared models. Returns an image id."""
    if not image_ids:
        return None
    best, best_key = image_ids[0], None
    for i, (iid, y) in enumerate(zip(image_ids, labels)):
        if y is None:
            continue
        ps = [probs[m][i] for m in probs]
        right = sum(int(max(range(len(p)), key=lambda c: p[c]) == y) for p in ps)
        if ps and right == len(ps):
            return iid
        key = (right, min((float(p[y]) for p in ps), default=0.0), -i)
        if best_key is None or key > best_key:
            best, best_key = iid, key
    return best


def large_input(alim: dict, input_size: int | None) -> bool:
    """Whether models of this input side get the large defaults: side at least alim["large_input_px"]
    (limits()["attack"]; ImageNet-size models). The one place this rule is written; param_default and
    default_saliency_methods use it."""
    return input_size is not None and input_size >= alim.get("large_input_px", 1 << 30)


def param_default(q: dict, alim: dict, input_size: int | None = None):
    """The first value of the attack control for param `q` (one of limits()["attack"]'s params):
    its large_default for models of large input (large_input: ImageNet-size models get fewer steps), else
    its default. The attack controls and default_spec use it."""
    return q["large_default"] if large_input(alim, input_size) and q.get("large_default") is not None else q["default"]


def default_saliency_methods(slim: dict, alim: dict, input_size: int | None = None) -> list[str]:
    """The saliency methods that views showing several start with: each method's default_on, or its
    large_default_on for models whose input side is at least alim["large_input_px"] (param_default's rule: at
    224 px, Integrated Gradients' 32 passes per map take seconds each on a CPU). slim: limits()["saliency"]."""
    info = slim.get("info") or {}
    key = "large_default_on" if large_input(alim, input_size) else "default_on"
    return [m for m in slim.get("methods") or [] if info[m].get(key)]


def default_spec(alim: dict, input_size: int | None = None) -> dict:
    """The attack spec that the attack controls (app.widgets.attack_ui.controls) build with every widget
    at its first value: the registry's default attack in its first norm, each shown param of that norm
    at param_default's value (large_default from alim["large_input_px"] up; "auto" params left out), untargeted.
    alim: limits()["attack"]."""
    attacks = alim.get("attacks") or {}
    name = alim.get("default") if alim.get("default") in attacks else next(iter(attacks), None)
    if name is None:
        raise ValueError("the backend lists no attacks")
    attack = attacks[name]
    norm = attack["variants"][0]["norm"]
    spec: dict = {"method": name, "norm": norm}
    for q in attack["params"]:
        if not q["shown"] or q["norm"] not in (None, norm):
            continue
        v = param_default(q, alim, input_size)
        if v is not None:
            spec[q["name"]] = v
    return spec


def input_side(cards: list[dict], ids: list[str], datasets: dict) -> int:
    """The largest input side (px) among the models `ids`: a card's input_size, else its data set's
    image size (datasets: limits()["datasets"])."""
    def side(c: dict) -> int:
        ds = c.get("dataset") or "cifar10"
        return int(c.get("input_size") or (datasets.get(ds) or {}).get("image_size") or 32)
    return max((side(c) for c in cards if c["id"] in ids), default=32)


def default_image(client, ids: list[str], dataset: str, source: str = "samples") -> str | None:
    """The default sample of `source` for the models `ids` (the rule above, over the first SAMPLES
    images), asked through `client` (any Api: in-process, HTTP, or the app's, whose failures answer
    None: then the first image, or None without images)."""
    items = ((client.list_images(source, limit=SAMPLES, dataset=dataset)) or {}).get("items") or []
    if not items:
        return None
    probs: dict[str, list] = {m: [] for m in ids}
    for it in items:
        res = client.predict(it["image_id"], ids) if ids else None
        if res is None:
            return items[0]["image_id"]
        for m in ids:
            probs[m].append(list(res["results"][m]["probs"]))
    return default_sample([it["image_id"] for it in items], [it.get("label") for it in items], probs)


def default_view(client) -> dict:
    """Compute the attack lab's default view through `client`; returns what it asked for and timings
    in seconds ({"default_image", "spec", "saliency", "predict_s", "total_s"}; {} without models)."""
    t0 = time.perf_counter()
    out: dict = {}
    cards = client.list_models()
    # the home page opens on the first card's data set (app.widgets.components.dataset_picker) and its models
    ds = str(cards[0].get("dataset") or "cifar10") if cards else "cifar10"
    ids = [c["id"] for c in cards if str(c.get("dataset") or "cifar10") == ds]
    if not ids:
        return out
    image_id = default_image(client, ids, ds)
    if image_id is None:
        return out
    out["default_image"], out["predict_s"] = image_id, time.perf_counter() - t0
    for it in client.list_images(limit=BROWSE, dataset=ds)["items"]:  # the sidebar browser's first page
        client.get_image(it["image_id"])
    lim = client.limits()
    spec = default_spec(lim.get("attack") or {}, input_side(cards, ids, lim.get("datasets") or {}))
    saliency = (lim.get("saliency") or {}).get("default")
    client.attack(image_id, dict(spec), ids, saliency=saliency)  # white-box: the attack's default mode
    out.update(spec=spec, saliency=saliency, total_s=time.perf_counter() - t0)
    return out
