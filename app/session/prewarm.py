"""Precompute the first page's default view when the app's backend client is created (no Streamlit).

The attack lab is the home page. Its default view is: the default sample (app.honesty's rule over
the offline samples and every installed model), every model in registry order, white-box PGD-10
L-inf eps 8/255 with a random start (app.attack_ui's defaults), gradient saliency. Computing it in a
background thread right after the client is built fills the service's caches (clean predictions,
adversarial images, saliency), so a visitor who opens the app after that gets the grid from the
cache, and the first visitor's identical requests join the computation already under way (the
service computes concurrent identical requests once). Failures are logged, never raised.
"""
from __future__ import annotations

import logging
import threading
import time

from app.session import honesty

log = logging.getLogger(__name__)

# app.attack_ui.controls() with its default widget values builds exactly this dict
DEFAULT_SPEC = {"method": "pgd", "norm": "linf", "eps": 8 / 255.0, "steps": 10, "random_start": True}
DEFAULT_SALIENCY = "gradient"
SAMPLES = 20   # offline samples the default rule looks at (app.components.default_image_id)
BROWSE = 12    # thumbnails on the sidebar browser's first page (app.components.BROWSE_PAGE)


def default_view(client) -> dict:
    """Compute the attack lab's default view through `client`; returns timings in seconds."""
    t0 = time.perf_counter()
    out: dict = {}
    cards = client.list_models()
    # the home page opens on the first card's data set (app.widgets.components.dataset_picker) and its models
    ds = str(cards[0].get("dataset") or "cifar10") if cards else "cifar10"
    ids = [c["id"] for c in cards if str(c.get("dataset") or "cifar10") == ds]
    if not ids:
        return out
    items = client.list_images("samples", None, 0, SAMPLES, dataset=ds)["items"]
    if not items:
        return out
    probs = {m: [] for m in ids}
    for it in items:
        res = client.predict(it["image_id"], ids)["results"]
        for m in ids:
            probs[m].append(list(res[m]["probs"]))
    image_id = honesty.default_sample([it["image_id"] for it in items], [it.get("label") for it in items], probs)
    out["default_image"], out["predict_s"] = image_id, time.perf_counter() - t0
    for it in items[:BROWSE]:
        client.get_image(it["image_id"])
    client.attack(image_id, dict(DEFAULT_SPEC), ids, mode="whitebox", saliency=DEFAULT_SALIENCY)
    out["total_s"] = time.perf_counter() - t0
    return out


def start(client) -> threading.Thread:
    """default_view(client) in a daemon thread (started and returned)."""
    def work():
        try:
            r = default_view(client)
            log.info("default view precomputed: %s", r)
        except Exception:
            log.warning("precomputing the default view failed", exc_info=True)

    t = threading.Thread(target=work, name="robustlens-default-view", daemon=True)
    t.start()
    return t
