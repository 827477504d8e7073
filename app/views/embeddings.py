"""Embedding explorer: a 2-D map (UMAP or PCA) of each model's features, side by side, for the same N
images; their adversarial twins are placed into the same map at the end of a segment, flips as black
crosses. Maps are computed as background tasks (progress bar, cancel). Hovering a point shows the
image's thumbnail (fetched for all points in one Service.thumbnails call, PNG-encoded here, cached);
clicking a point opens that image in the attack lab."""
from __future__ import annotations

import hashlib
import json

import numpy as np
import pandas as pd
import streamlit as st

from app.session import honesty, state, tasks
from app.session.client import backend_key, classes, current_dataset, explain_error, get_client, get_image
from app.widgets import attack_ui, charts
from app.widgets.components import data_sources, dataset_info, input_side, model_picker, page_setup, source_noun
from app.widgets.imaging import THUMB_PX, png_data_uris, tooltip_side, upscale
from app.widgets.links import linked_open

SLOT = "emb_queue"
PLACEMENT = {
    "transform": "placed by the map's own UMAP/PCA transform",
    "knn": ("placed by k-nearest neighbours (approximate): each twin goes to the distance-weighted mean "
            "position of the 10 map images whose features are closest to its own, because this stored map's "
            "UMAP could not be refit faithfully; a twin can only land inside the existing map, never in "
            "empty space"),
}

st.title("Embedding explorer")
st.caption("Each model's penultimate-layer features squeezed into 2-D. Points are images coloured by their true "
           "class; a grey segment leads to the image's adversarial twin: a black cross when the attack flipped "
           "the prediction, a grey open circle when it did not (no class uses black or that grey). What to look "
           "for: how far each segment reaches. A robust model's twins stay near their clean image, a standard "
           "model's jump far (often into another class's region). The shipped models are small CPU-trained ones, "
           "so their classes overlap and separate clusters are rare; compare segment lengths, not cluster shapes.")

_, cards, names = page_setup()
by_id = {c["id"]: c for c in cards}
class_names = classes()
src_opts, max_n = data_sources()

# before anything writes the URL: does the link name maps (run=1), and can they be computed here?
linked = linked_open("embeddings", list(by_id), "emb_src", src_opts, dataset_info(current_dataset())["label"],
                     "Compute maps")
ids = model_picker(cards)
# The twins' attack: any interactive attack of the backend's registry (outside the form, so its own controls
# follow the choice at once); the first of the registry's order, the cheapest, by default.
alim = attack_ui.attack_limits()
spec, attack_desc = attack_ui.controls(class_names, prefix="emb_", none_label="none (clean only)", targeted=False,
                                       default=next(iter(attack_ui.menu(alim)), None), alim=alim,
                                       input_size=input_side(cards, ids))
with st.form("emb_settings", border=True):
    c1, c2, c3 = st.columns([1.2, 1, 1])
    source = state.widget(c1.radio, "Images", "emb_src", src_opts[0], options=src_opts, horizontal=True,
                          format_func=lambda s: {"test": "test set", "samples": "offline samples",
                                                 "train": "train set"}[s])
    n_hi = min(2000, max(max_n.values()))
    n = state.widget(c1.slider, "N images", "emb_n", min(500, n_hi), lo=5, hi=n_hi, min_value=5,
                     max_value=n_hi, step=5, help="Class-balanced, seeded sample of the chosen images.")
    pca = state.widget(c2.toggle, "PCA instead of UMAP", "emb_pca", False,
                       help="PCA is linear and instant; UMAP keeps neighbourhoods and needs a fit.")
    seed = state.widget(c3.number_input, "Seed", "emb_seed", 0, lo=0, hi=10_000, min_value=0, max_value=10_000)
    arrows = state.widget(c3.toggle, "Show segments", "emb_arrows", True)
    submitted = st.form_submit_button("Compute maps", type="primary", icon=":material/play_arrow:")

n_shown, n = n, min(int(n), max_n.get(source, n))
method = "pca" if pca else "umap"
key = {"models": ids, "n": n, "spec": spec, "method": method, "seed": int(seed), "source": source}
desc = f"{n} {source_noun(source)} images, {method.upper()}, " + ("clean only" if spec is None else attack_desc)
submitted = submitted or (linked and bool(ids))  # a link naming maps computes them (the service's cache first)

if submitted:
    if not ids:
        st.warning("Choose at least one model.")
    else:
        tasks.start(SLOT, {**key, "desc": desc},
                    [{"label": m, "title": names.get(m, m), "kind": "embed",
                      "params": {"model_id": m, "n": n, "spec": spec, "method": method, "seed": int(seed),
                                 "source": source}} for m in ids])

q = tasks.get(SLOT)
current = bool(q and q["state"] == "done" and q["key"] == {**key, "desc": q["key"].get("desc")})
state.sync_url({"models": ids, "emb_src": source, "emb_n": n_shown, "emb_pca": pca, "emb_seed": seed,
                **attack_ui.url_params("emb_", alim=alim), state.RUN: 1 if current else None})
if tasks.running(SLOT):
    tasks.poller(SLOT, "Embedding")

if q is None:
    st.info(f"Choose the settings and press **Compute maps**. {min(500, n_hi)} images with FGSM take a few seconds "
            "per model on a CPU; PGD and more images take longer (progress is shown and you can cancel).")
    st.stop()
tasks.report(SLOT)
results = q["results"]
if not results:
    st.stop()
st.markdown(f"**{q['key']['desc']}**" + ("" if q["key"] == {**key, "desc": q["key"]["desc"]}
                                          else " (settings changed since: press Compute maps to update)"))


@st.cache_data(show_spinner=False, max_entries=8)
def _thumbnails(backend: str, image_ids: tuple[str, ...], side: int) -> dict[str, str]:
    """{image id: PNG data URI} of the images at side x side: one backend call per 2000 ids (the
    service's cap), encoded once per (backend, ids, side)."""
    ids = list(dict.fromkeys(image_ids))
    out: dict[str, str] = {}
    for i in range(0, len(ids), 2000):
        chunk = ids[i:i + 2000]
        out.update(zip(chunk, png_data_uris(get_client().thumbnails(chunk, side=side)["pixels"])))
    return out


def _open(image_id: str) -> None:
    state.put("image", image_id)
    st.switch_page("views/attack_lab.py")


MOUSE = {"click": "click a point to open it", "box": "drag a box to list several"}
mouse = state.widget(st.radio, "Mouse on the maps", "emb_mouse", "click", options=list(MOUSE), format_func=MOUSE.get,
                     horizontal=True, help="Click: a click on a point opens that image in the attack lab (drag "
                                           "pans, the wheel zooms). Box: dragging draws a selection box at once; the "
                                           "selected images are listed with thumbnails below the maps. Either way, "
                                           "hovering a point shows the image's thumbnail.")
chosen: list[str] = []
done_ids = [m for m in q["key"]["models"] if m in results]
side = tooltip_side(int(dataset_info(current_dataset())["image_size"]))
try:  # every map's images in one call; without them the maps still work, with text-only tooltips
    thumbs: dict[str, str] | None = _thumbnails(backend_key(), tuple(dict.fromkeys(
        i for m in done_ids for i in results[m]["image_ids"])), side)
except Exception as e:
    thumbs = None
    st.caption(f"No thumbnails in the tooltips: {explain_error(e)}")
# the tooltip's picture at a whole multiple of its side, about 96 px, pixels kept square
st.html(f"<style>#vg-tooltip-element img {{ width: {side * max(1, round(96 / side))}px; "
        "image-rendering: pixelated; }</style>")
# a selection belongs to one set of maps and one mouse mode: new maps or another mode start without one
run_tag = hashlib.sha256(json.dumps(q["key"], sort_keys=True, default=str).encode()).hexdigest()[:10]
per_row = 1 if len(done_ids) == 1 else 2
for i in range(0, len(done_ids), per_row):
    cols = st.columns(per_row)
    for col, m in zip(cols, done_ids[i:i + per_row]):
        res = results[m]
        card = by_id.get(m) or {"id": m}
        chart = charts.embedding_map(res, class_names, title=names.get(m, m), show_arrows=arrows,
                                     box_select=mouse == "box", dataset=current_dataset(),
                                     thumbnails=None if thumbs is None else [thumbs[i] for i in res["image_ids"]])
        ev = col.altair_chart(chart, width="stretch", key=f"emb_{m}_{mouse}_{run_tag}", on_select="rerun",
                              selection_mode=charts.embedding_selection_modes(res, mouse == "box"))
        flips = None if res.get("pred_adv") is None else int((np.asarray(res["pred_adv"])
                                                                != np.asarray(res["pred_clean"])).sum())
        col.caption(f"{honesty.model_line(card)}. {res['method'].upper()}"
                    + (", reference map reused" if res.get("from_reference") else "")
                    + (f"; adversarial points {PLACEMENT.get(res['placement'], 'placed by ' + str(res['placement']))}"
                       if res.get("coords_adv") is not None else "")
                    + (f"; {flips} of {len(res['image_ids'])} predictions flipped" if flips is not None else ""))
        chosen += [res["image_ids"][r] for r in charts.embedding_selection(ev, mouse == "box", res)
                   if 0 <= r < len(res["image_ids"])]

chosen = list(dict.fromkeys(chosen))
if len(chosen) == 1:
    _open(chosen[0])
elif chosen:
    st.subheader(f"{len(chosen)} selected images")
    cols = st.columns(8)
    for i, iid in enumerate(chosen[:16]):
        with cols[i % 8]:
            im = get_image(iid, quiet=True)
            if im is not None:
                st.image(upscale(im["pixels"], THUMB_PX), width=THUMB_PX)
            if st.button(iid.split(":")[-1], key=f"emb_open_{iid}", help=f"open {iid} in the attack lab"):
                _open(iid)



def _rows() -> list[dict]:
    """Every point of every map, for the exports (built only when a download is clicked)."""
    out = []
    for m in done_ids:
        r = results[m]
        for j, iid in enumerate(r["image_ids"]):
            out.append({"model": m, "image_id": iid, "label": int(r["labels"][j]),
                        "pred_clean": int(r["pred_clean"][j]),
                        "pred_adv": None if r["pred_adv"] is None else int(r["pred_adv"][j]),
                        "x": float(r["coords_clean"][j][0]), "y": float(r["coords_clean"][j][1]),
                        "x_adv": None if r["coords_adv"] is None else float(r["coords_adv"][j][0]),
                        "y_adv": None if r["coords_adv"] is None else float(r["coords_adv"][j][1])})
    return out


e1, e2 = st.columns(2)
e1.download_button("Coordinates (CSV)", lambda: pd.DataFrame(_rows()).to_csv(index=False),
                   "robustlens_embedding.csv", "text/csv", on_click="ignore", icon=":material/table:")
e2.download_button("Settings + coordinates (JSON)", lambda: json.dumps({"settings": q["key"], "points": _rows()}),
                   "robustlens_embedding.json", "application/json", on_click="ignore",
                   icon=":material/data_object:")
st.caption("Hover a point for its thumbnail, id, true class and predictions. With 'click', a click on a point "
           "opens it in the attack lab, a drag pans and the wheel zooms (double-click resets); with 'box', dragging "
           "across a map selects the images whose point or twin lies inside (listed above with thumbnails; "
           "double-click clears).")
