"""Corruptions: one image under the 15 common corruptions (noise, blur, weather, digital) at 5
severities, and what every chosen model makes of each: "what humans see" is unchanged by fog or
noise, what do the models see? An overview (the image under every corruption and severity, and
where each model's prediction held), then one corruption in detail: per severity, each model's
prediction and saliency side by side, as the attack lab shows attacks."""
from __future__ import annotations

import json

import numpy as np
import streamlit as st
from PIL import Image

from app.session import state
from app.session.client import backend, classes
from app.widgets import charts
from app.widgets.components import (
    NO_SALIENCY,
    badge,
    colour_bar,
    model_header,
    model_picker,
    page_setup,
    prob_bars,
    quick_saliency,
    show_image,
)
from app.widgets.imaging import heat_rgb, to_uint8

st.title("Corruptions")
st.caption("The same image under common corruptions (CIFAR-10-C's 15 types at 5 severities): a person still "
           "sees the same object through fog, noise or blur. Does each model still see it, and where does it look?")

img, cards, names = page_setup(with_image=True)
lim = backend(quiet=True).limits() or {}
clim = lim.get("corruptions") or {}
SALIENCY, SAL_DEFAULT = quick_saliency(lim.get("saliency") or {})
NAMES = list(clim.get("names") or [])
LABELS = dict(clim.get("labels") or {})
by_id = {c["id"]: c for c in cards}


def _overview_png(pixels: np.ndarray, clean: np.ndarray, px: int = 64) -> np.ndarray:
    """(K*(px+2), 6*(px+2), 3) uint8: a row per corruption, the clean image then severities 1..5."""
    k, v = pixels.shape[:2]
    gap = 2
    out = np.full((k * (px + gap), (v + 1) * (px + gap), 3), 255, np.uint8)
    for i in range(k):
        for j in range(v + 1):
            cell = np.asarray(Image.fromarray(to_uint8(clean if j == 0 else pixels[i, j - 1])).resize(
                (px, px), Image.Resampling.NEAREST if clean.shape[0] <= px else Image.Resampling.BILINEAR))
            out[i * (px + gap):i * (px + gap) + px, j * (px + gap):j * (px + gap) + px] = cell
    return out


def _held_marks(res: dict, ids: list[str]) -> list[tuple[str, list[str]]]:
    """(model name, per corruption a mark per severity) per model: o = the clean prediction held, x = it changed."""
    return [(names.get(m, m), ["".join("x" if f else "o" for f in row) for row in res["results"][m]["flipped"]])
            for m in ids]


def _pred_text(r: dict, i: int, j: int, class_names: list[str]) -> str:
    p = int(r["pred"][i, j])
    name = class_names[p] if p < len(class_names) else str(p)
    return f"{name} {float(r['prob'][i, j]):.0%}"


def _detail(res: dict, ids: list[str], name: str, sal: str, class_names: list[str], label) -> None:
    """Per severity (rows): the corrupted image, then each model's prediction (red when it changed from
    the clean one) and its saliency map for the predicted class."""
    i = 0  # the detail call holds one corruption
    heads = st.columns([1] + [1] * len(ids), vertical_alignment="top")
    heads[0].markdown("**image**")
    for col, m in zip(heads[1:], ids):
        with col:
            model_header(by_id.get(m), m)
    with st.columns([1] + [1] * len(ids))[0]:
        show_image(img["pixels"], caption="clean")
    clean_cols = st.columns([1] + [1] * len(ids))
    for col, m in zip(clean_cols[1:], ids):
        with col:
            prob_bars(res["results"][m]["clean"]["top"][:3], label)
    for j, s in enumerate(res["severities"]):
        cols = st.columns([1] + [1] * len(ids), vertical_alignment="top")
        with cols[0]:
            show_image(res["pixels"][i, j], caption=f"{LABELS.get(name, name)}, severity {s}")
        for col, m in zip(cols[1:], ids):
            r = res["results"][m]
            with col:
                flipped = bool(r["flipped"][i, j])
                badge(("changed: " if flipped else "held: ") + _pred_text(r, i, j, class_names),
                      "red" if flipped else "green")
                if r["saliency"] is not None:
                    show_image(heat_rgb(r["saliency"][i, j]), caption=f"saliency, severity {s}")
    if sal != NO_SALIENCY:
        colour_bar("0", "1 = this map's top", f"{SALIENCY.get(sal, sal)}, scaled per map, for the predicted class")


@st.fragment
def lab() -> None:
    class_names = classes()
    ids = model_picker(cards)
    top = st.columns([1.4, 1.2, 0.8])
    name = state.widget(top[0].selectbox, "Corruption in detail", "corr", "fog" if "fog" in NAMES else NAMES[0],
                        options=NAMES, format_func=lambda c: LABELS.get(c, c))
    sal = state.widget(top[1].selectbox, "Saliency", "csal", SAL_DEFAULT, options=list(SALIENCY),
                       format_func=SALIENCY.get, help="Which attribution method to show for each model.")
    seed = state.widget(top[2].number_input, "Seed", "cseed", 0, lo=0, hi=10_000, min_value=0, max_value=10_000,
                        help="The random draws of the noise, blur angles, frost crops ...: the same seed, "
                             "the same corrupted images.")
    state.sync_url({"image": img["image_id"], "models": ids if ids != [c["id"] for c in cards] else None,
                    "corr": name, "csal": sal, "cseed": int(seed) or None})
    if not ids:
        st.info("Choose at least one model.")
        return
    label = img.get("label")
    with st.spinner(f"{LABELS.get(name, name)}: {len(ids)} model(s)..."):
        detail = backend().corruption_view(img["image_id"], ids, corruptions=[name],
                                           saliency=None if sal == NO_SALIENCY else sal, seed=int(seed))
    if detail is None:
        return
    held = {m: int((~detail["results"][m]["flipped"]).sum()) for m in ids}
    st.markdown(f"**{LABELS.get(name, name)}** - the clean prediction held at "
                + ", ".join(f"{held[m]} of 5 severities on {names.get(m, m)}" for m in ids))
    _detail(detail, ids, name, sal, class_names, label)
    st.divider()
    st.subheader("Every corruption and severity")
    with st.spinner("All 15 corruptions x 5 severities..."):
        res = backend().corruption_view(img["image_id"], ids, seed=int(seed))
    if res is None:
        return
    st.markdown("Clean prediction kept (of 75 corrupted images): " + ", ".join(
        f"**{names.get(m, m)}** {int((~res['results'][m]['flipped']).sum())}" for m in ids))
    # full width: a column per model needs room for its (wrapped) name
    st.plotly_chart(charts.held_matrix(_held_marks(res, ids), [LABELS.get(c, c) for c in res["corruptions"]]),
                    width="stretch", key="corr_held")
    st.caption("Per corruption and model, a mark per severity 1..5 (left to right): o = the model's prediction is "
               "the one it gives the clean image, x = it changed; green: held at every severity, yellow: at some, "
               "red: at none. The same corrupted images for every model (seeded), shown below.")
    st.image(_overview_png(res["pixels"], img["pixels"]), caption="clean, then severities 1-5 (left to right); "
             "rows: " + ", ".join(LABELS.get(c, c) for c in res["corruptions"]), width=360)
    numbers = [{"model": m, "corruption": c, "severity": s, "prediction": class_names[int(r["pred"][i, j])]
                if int(r["pred"][i, j]) < len(class_names) else int(r["pred"][i, j]),
                "probability": float(r["prob"][i, j]), "changed": bool(r["flipped"][i, j])}
               for m in ids for r in [res["results"][m]] for i, c in enumerate(res["corruptions"])
               for j, s in enumerate(res["severities"])]
    st.download_button("Numbers (JSON)", json.dumps({"image_id": img["image_id"], "seed": int(seed),
                                                     "variant": clim.get("variant"), "results": numbers}, indent=1),
                       "robustlens_corruptions.json", "application/json", on_click="ignore",
                       icon=":material/data_object:")


if not NAMES:
    st.error("The backend lists no corruptions (limits()['corruptions']).")
    st.stop()
lab()
