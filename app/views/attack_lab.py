"""Attack lab (home): one image, every chosen model, one attack. A column per model shows the clean
image and its top-5, the adversarial image with its top-5 and whether the prediction flipped, the
perturbation magnified, and saliency on both images. Controls and grid live in one fragment, so
moving a slider reruns only the grid (the service caches each (model, image, attack) result)."""
from __future__ import annotations

import csv
import io
import json

import streamlit as st

from app.session import state
from app.session.client import backend, classes
from app.widgets import attack_ui
from app.widgets.components import (
    NO_SALIENCY,
    badge,
    colour_bar,
    input_side,
    model_header,
    model_picker,
    page_setup,
    prob_bars,
    quick_saliency,
    show_image,
)
from app.widgets.imaging import amplify_delta, compose_grid_png, delta_caption, heat_rgb

MODES = {"whitebox": "White-box: attack each model itself", "transfer": "Transfer: craft on one, test on all"}
SCALES = {"map": "per map", "shared": "shared across models"}

st.title("Attack lab")
st.caption("Pick an image in the sidebar, then an attack: every model is attacked (or, in transfer mode, "
           "shown the same adversarial image) and the columns compare what each one sees.")

img, cards, names = page_setup(with_image=True)
lim = backend(quiet=True).limits() or {}
SALIENCY, SAL_DEFAULT = quick_saliency(lim.get("saliency") or {})
by_id = {c["id"]: c for c in cards}


def per_row(n: int) -> int:
    """Model columns per row: all of them up to 5; 6-8 models in two rows (3-4 columns each), so a
    column never gets narrower than a readable top-5 at 1024 px."""
    return n if n <= 5 else -(-n // 2)


def _export_rows(res: dict, ids: list[str]) -> tuple[list[str], list[tuple[str, list]], list[list[str]]]:
    r = res["results"]
    rows = [("clean", [img["pixels"] for _ in ids]), ("adversarial", [r[m]["adv_pixels"] for m in ids]),
            ("perturbation", [amplify_delta(r[m]["delta"])[0] for m in ids])]
    if r[ids[0]]["saliency_clean"] is not None:
        rows += [("saliency clean", [heat_rgb(r[m]["saliency_clean"]) for m in ids]),
                 ("saliency adv.", [heat_rgb(r[m]["saliency_adv"]) for m in ids])]
    notes = [[f'{r[m]["clean"]["top"][0]["class_name"]} {r[m]["clean"]["top"][0]["prob"]:.0%}' for m in ids],
             [f'{r[m]["adv"]["top"][0]["class_name"]} {r[m]["adv"]["top"][0]["prob"]:.0%}'
              + (" FLIP" if r[m]["flipped"] else "") for m in ids],
             [f'Linf {r[m]["linf"] * 255:.1f}/255 L2 {r[m]["l2"]:.2f}' for m in ids]]
    return [names.get(m, m) for m in ids], rows, notes


def _numbers(res: dict, ids: list[str]) -> list[dict]:
    out = []
    for m in ids:
        r = res["results"][m]
        out.append({"model": m, "crafted_on": r["crafted_on"], "clean_pred": r["clean"]["top"][0]["class_name"],
                    "clean_prob": r["clean"]["top"][0]["prob"], "adv_pred": r["adv"]["top"][0]["class_name"],
                    "adv_prob": r["adv"]["top"][0]["prob"], "flipped": r["flipped"], "success": r["success"],
                    "linf": r["linf"], "linf_k255": r["linf"] * 255, "l2": r["l2"], "iterations": r["iterations"]})
    return out


def _csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(rows[0]))
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


def _verdict(r: dict, label: int | None, target: int | None, class_names: list[str]) -> tuple[str, str]:
    """(badge text, colour) for one model's result. Targeted: whether the target was reached and its
    probability (from the adversarial probabilities); untargeted: flipped / held / already wrong."""
    before, after = r["clean"]["top"][0]["class_name"], r["adv"]["top"][0]["class_name"]
    if target is not None:
        probs = r["adv"].get("probs")
        p_t = float(probs[target]) if probs is not None else next(
            (float(t["prob"]) for t in r["adv"]["top"] if int(t["index"]) == target), None)
        p_txt = "" if p_t is None else f" (p={p_t:.2f})"
        if int(r["adv"]["pred"]) == target:
            return f"target reached: {class_names[target]}{p_txt}", "red"
        moved = f"; now {after}" if r["flipped"] else ""
        return f"target not reached: {class_names[target]}{p_txt}{moved}", "orange" if r["flipped"] else "green"
    if label is not None and r["clean"]["pred"] != label:
        # the model was wrong before the attack: "held" would read as robustness it does not have
        return f"already wrong when clean ({before})" + (f" -> {after}" if r["flipped"] else ""), "gray"
    if r["flipped"]:
        return f"flipped: {before} -> {after}", "red"
    return f"held: {after}", "green"


def _rows(label: int | None, target: int | None, sal: bool, class_names: list[str]) -> list:
    """The grid's rows, top to bottom: each draws one model's cell given (model id, result, maps).
    Drawn row by row (one st.columns per row), so a row starts at the same height in every column
    even when a name or a badge wraps in one of them."""
    def head(m, r, _):
        model_header(by_id.get(m), m)
        if r["crafted_on"] != m:
            st.caption(f"adversarial image crafted on {names.get(r['crafted_on'], r['crafted_on'])}")

    def verdict(m, r, _):
        text, colour = _verdict(r, label, target, class_names)
        badge(text, colour)

    def pert(m, r, _):
        img_, scale = amplify_delta(r["delta"])
        show_image(img_, caption=delta_caption(scale))

    rows = [head,
            lambda m, r, _: show_image(img["pixels"], caption="clean"),
            lambda m, r, _: prob_bars(r["clean"]["top"], label),
            lambda m, r, _: show_image(r["adv_pixels"], caption="adversarial"),
            verdict,
            lambda m, r, _: prob_bars(r["adv"]["top"], label, target),
            pert,
            lambda m, r, _: st.caption(f'L-inf {r["linf"] * 255:.1f}/255 | L2 {r["l2"]:.3f} | {r["iterations"]} it.')]
    if sal:
        rows += [lambda m, r, s_: show_image(heat_rgb(s_["clean"]), caption="saliency, clean"),
                 lambda m, r, s_: show_image(heat_rgb(s_["adv"]), caption="saliency, adversarial"),
                 lambda m, r, s_: colour_bar(*s_["bar"])]
    return rows


def _saliency_maps(res: dict, ids: list[str], sal: str, scale: str, spec: dict, mode: str) -> tuple[dict, str]:
    """{model: {"clean", "adv": (H,W) heat in [0,1], "bar": (lo, hi, title)}} and the scale actually used.
    Per map: the attack's own maps (each over its own top). Shared: the backend's saliency_maps on one
    top for every model, clean and adversarial (the same images and targets as the attack in white-box
    mode), so maps compare across models."""
    r = res["results"]
    per_map = {m: {"clean": r[m]["saliency_clean"], "adv": r[m]["saliency_adv"],
                   "bar": ("0", "1 = this map's top", "saliency, scaled per map")} for m in ids}
    if scale != "shared":
        return per_map, "map"
    if mode != "whitebox":
        st.caption("A shared saliency scale needs white-box mode (the maps of a transferred image are scaled "
                   "per map).")
        return per_map, "map"
    out = backend(quiet=True).saliency_maps(img["image_id"], ids, sal, spec=spec, scale="shared")
    if out is None:
        return per_map, "map"
    bar = ("0", f"{out['top']:.3g} = shared top", "saliency, one scale for all models (|attribution|)")
    return {m: {"clean": x["clean"], "adv": x["adv"], "bar": bar} for m, x in out["results"].items()}, "shared"


def _grid(res: dict, ids: list[str], label, target, sal_maps: dict | None, class_names: list[str]) -> None:
    k = per_row(len(ids))
    rows = _rows(label, target, sal_maps is not None, class_names)
    for i in range(0, len(ids), k):
        block = ids[i:i + k]
        for draw in rows:
            for col, m in zip(st.columns(k, vertical_alignment="top"), block):
                with col:
                    draw(m, res["results"][m], None if sal_maps is None else sal_maps[m])


def _preview(ids: list[str], label) -> None:
    """While the attack runs: each model's clean prediction (fast), so the page is useful at once."""
    pred = backend(quiet=True).predict(img["image_id"], ids)
    if not pred:
        return
    k = per_row(len(ids))
    for i in range(0, len(ids), k):
        cols = st.columns(k)
        for col, m in zip(cols, ids[i:i + k]):
            with col:
                model_header(by_id.get(m), m)
                show_image(img["pixels"], caption="clean")
                prob_bars(pred["results"][m]["top"], label)
                st.caption("attacking...")


@st.fragment
def lab() -> None:
    class_names = classes()
    ids_all = [c["id"] for c in cards]
    ids = model_picker(cards)  # full width: every model's chip visible at once
    top = st.columns([1.6, 1.2, 1.2])
    mode = state.widget(top[0].radio, "Mode", "mode", "whitebox", options=list(MODES), format_func=MODES.get)
    source = None
    if mode == "transfer":
        source = state.widget(top[0].selectbox, "Crafted on", "source", ids_all[0], options=ids_all,
                              format_func=lambda m: names.get(m, m))
    sal = state.widget(top[1].selectbox, "Saliency", "sal", SAL_DEFAULT, options=list(SALIENCY),
                       format_func=SALIENCY.get, help="Which attribution method to show under each column.")
    scale = state.widget(top[2].radio, "Saliency scale", "sal_scale", "map", options=list(SCALES),
                         format_func=SCALES.get, horizontal=True,
                         help="Per map: each map's brightest pixel is 1 (compare where, within a map). "
                              "Shared: one scale for every model (compare how strongly, across models).")
    spec, desc = attack_ui.controls(class_names, alim=lim.get("attack") or {}, input_size=input_side(cards, ids))
    state.sync_url({"image": img["image_id"], "models": ids if ids != ids_all else None, "mode": mode,
                    "source": source if mode == "transfer" else None, "sal": sal,
                    "sal_scale": scale if scale != "map" else None,
                    **attack_ui.url_params(alim=lim.get("attack") or {})})
    if not ids:
        st.info("Choose at least one model.")
        return
    if spec is None:
        return
    preview = st.empty()
    with preview.container():
        with st.spinner(f"Attacking {len(ids)} model(s): {desc}..."):
            _preview(ids, img.get("label"))
            res = backend().attack(img["image_id"], spec, ids, mode=mode, source_model=source,
                                   saliency=None if sal == NO_SALIENCY else sal)
    preview.empty()
    if res is None:
        return
    label = img.get("label")
    target = spec.get("target_class")
    st.markdown(f"**{desc}** - {attack_ui.outcome_headline(res['results'], ids, label, target, class_names)}"
                + (f"; crafted on {names.get(source, source)}" if mode == "transfer" else ""))
    sal_maps = None if sal == NO_SALIENCY else _saliency_maps(res, ids, sal, scale, spec, mode)[0]
    _grid(res, ids, label, target, sal_maps, class_names)
    st.caption("Under each name: the model's measured clean / robust test accuracy and status (cpu-preview = small "
               "CPU-trained models). Rows: the clean image and the model's top-5 (a check marks the true class); the "
               "adversarial image (flip = the top class changed; for a targeted attack, whether the target became the "
               "prediction and its probability; a bullseye marks the target); the perturbation, magnified so grey is "
               "'unchanged'; saliency (bright = the pixels that most move the predicted class; "
               "the bar gives the scale).")
    heads, rows, notes = _export_rows(res, ids)
    numbers = _numbers(res, ids)
    meta = {"image_id": img["image_id"], "spec": res["spec"], "mode": mode, "source_model": source,
            "saliency": sal, "results": numbers}
    e1, e2, e3 = st.columns(3)
    e1.download_button("Grid (PNG)", lambda: compose_grid_png(heads, rows, f"{img['image_id']} - {desc}",
                                                              notes=notes + [[]] * (len(rows) - 3)),
                       "robustlens_attack.png", "image/png", on_click="ignore", icon=":material/image:")
    e2.download_button("Numbers (CSV)", _csv(numbers), "robustlens_attack.csv", "text/csv", on_click="ignore",
                       icon=":material/table:")
    e3.download_button("Numbers (JSON)", json.dumps(meta, indent=2), "robustlens_attack.json",
                       "application/json", on_click="ignore", icon=":material/data_object:")


lab()
