"""Attack lab (home): one image, every chosen model, one attack. A column per model shows the clean
image and its top-5, the adversarial image with its top-5 and whether the prediction flipped, the
perturbation magnified, and saliency on both images. Controls and grid live in one fragment, so
moving a slider reruns only the grid (the service caches each (model, image, attack) result)."""
from __future__ import annotations

import csv
import io
import json

import streamlit as st

from app import attack_ui, state
from app.client import call, classes, models
from app.components import image_picker, model_picker, no_models_notice, prob_bars, show_image
from app.imaging import amplify_delta, compose_grid_png, heat_rgb, to_uint8

SALIENCY = {"gradient": "Gradient", "smoothgrad": "SmoothGrad", "integrated_gradients": "Integrated Gradients",
            "gradcam": "Grad-CAM", "guided_backprop": "Guided Backprop", "none": "off (faster)"}
MODES = {"whitebox": "White-box: attack each model itself", "transfer": "Transfer: craft on one, test on all"}

st.title("Attack lab")
st.caption("Pick an image in the sidebar, then an attack: every model is attacked (or, in transfer mode, "
           "shown the same adversarial image) and the columns compare what each one sees.")

img = image_picker()
cards = models()
names = {c["id"]: c.get("display_name") or c["id"] for c in cards}


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


def _column(m: str, r: dict, label: int | None, target: int | None, show_sal: bool) -> None:
    st.markdown(f"**{names.get(m, m)}**")
    if r["crafted_on"] != m:
        st.caption(f"adversarial image crafted on {names.get(r['crafted_on'], r['crafted_on'])}")
    show_image(img["pixels"], caption="clean")
    prob_bars(r["clean"]["top"], label)
    show_image(r["adv_pixels"], caption="adversarial")
    before, after = r["clean"]["top"][0]["class_name"], r["adv"]["top"][0]["class_name"]
    if label is not None and r["clean"]["pred"] != label:
        # the model was wrong before the attack: "held" would read as robustness it does not have
        st.badge(f"already wrong when clean ({before})" + (f" -> {after}" if r["flipped"] else ""),
                 icon=":material/help:", color="gray")
    elif r["flipped"]:
        st.badge(f"flipped: {before} -> {after}", icon=":material/swap_horiz:", color="red")
    else:
        st.badge(f"held: {after}", icon=":material/shield:", color="green")
    prob_bars(r["adv"]["top"], label, target)
    pert, scale = amplify_delta(r["delta"])
    show_image(pert, caption=f"perturbation x{scale:.0f}")
    st.caption(f'L-inf {r["linf"] * 255:.1f}/255 | L2 {r["l2"]:.3f} | {r["iterations"]} it.')
    if show_sal:
        show_image(heat_rgb(r["saliency_clean"]), caption="saliency, clean")
        show_image(heat_rgb(r["saliency_adv"]), caption="saliency, adversarial")


@st.fragment
def lab() -> None:
    class_names = classes()
    ids_all = [c["id"] for c in cards]
    top = st.columns([2.2, 1.6, 1.2])
    with top[0]:
        ids = model_picker(cards)
    mode = state.widget(top[1].radio, "Mode", "mode", "whitebox", options=list(MODES), format_func=MODES.get)
    source = None
    if mode == "transfer":
        source = state.widget(top[1].selectbox, "Crafted on", "source", ids_all[0], options=ids_all,
                              format_func=lambda m: names.get(m, m))
    sal = state.widget(top[2].selectbox, "Saliency", "sal", "gradient", options=list(SALIENCY),
                       format_func=SALIENCY.get, help="Which attribution method to show under each column.")
    spec, desc = attack_ui.controls(class_names)
    state.sync_url({"image": img["image_id"], "models": ids if ids != ids_all else None, "mode": mode,
                    "source": source if mode == "transfer" else None, "sal": sal, **attack_ui.url_params()})
    if not ids:
        st.info("Choose at least one model.")
        return
    with st.spinner(f"Attacking {len(ids)} model(s): {desc}..."):
        res = call("attack", img["image_id"], spec, ids, mode=mode, source_model=source,
                   saliency=None if sal == "none" else sal)
    if res is None:
        return
    label = img.get("label")
    target = spec.get("target_class")
    flips = sum(res["results"][m]["flipped"] for m in ids)
    st.markdown(f"**{desc}** - prediction flipped on **{flips} of {len(ids)}** model(s)"
                + (f"; crafted on {names.get(source, source)}" if mode == "transfer" else ""))
    cols = st.columns(len(ids))
    for col, m in zip(cols, ids):
        with col:
            _column(m, res["results"][m], label, target, sal != "none")
    st.caption("Rows: the clean image and the model's top-5 (a check marks the true class); the adversarial "
               "image (flip = the top class changed; a bullseye marks the target); the perturbation, magnified "
               "so grey is 'unchanged'; saliency (bright = the pixels that most move the predicted class).")
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


if img is None:
    st.stop()
if not cards:
    no_models_notice()
    show_image(to_uint8(img["pixels"]), caption=img["image_id"])
    st.stop()
lab()
