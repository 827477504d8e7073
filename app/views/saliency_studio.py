"""Saliency studio: one image, a grid of saliency methods x models, for the clean and the adversarial
image, with measures per map (gradient alignment, deletion / insertion AUC and curves, clean -> adv
drift) and the parameter-randomisation sanity check on demand."""
from __future__ import annotations

import json

import pandas as pd
import streamlit as st

from app.session import state
from app.session.client import backend, classes
from app.session.home import default_saliency_methods
from app.widgets import attack_ui, charts
from app.widgets.components import colour_bar, input_side, model_header, model_picker, page_setup, show_image
from app.widgets.imaging import compose_grid_png, heat_rgb, upscale

CELL_PX = 112
SCALES = {"map": "per map", "shared": "shared across models"}


def per_block(n: int) -> int:
    """Models per block of the grid (each model cell holds two maps): up to 4 side by side, more
    in balanced blocks (5 -> 3 + 2, 8 -> 4 + 4), so the maps stay readable at 1024 px."""
    return n if n <= 4 else -(-n // -(-n // 4))

st.title("Saliency studio")
st.caption("Which pixels does each model use? Robust models tend to give maps that follow the object; "
           "standard models give speckle. The same measures are computed for every map.")

img, cards, names = page_setup(with_image=True)
by_id = {c["id"]: c for c in cards}
lim = backend(quiet=True).limits() or {}
sal_lim = lim.get("saliency") or {"methods": [], "info": {}}
# every saliency method of the backend's registry, slow ones marked
METHODS = {m: sal_lim["info"][m]["label"] + (" (slow)" if sal_lim["info"][m]["slow"] else "")
           for m in sal_lim["methods"]}


def _fmt(v) -> str:
    return "n/a" if v is None or v != v else f"{v:.2f}"  # NaN (constant map) -> n/a


@st.fragment
def studio() -> None:
    ids = model_picker(cards)  # full width: every model's chip visible at once
    c1, c2 = st.columns([1.4, 1])
    side = input_side(cards, ids)
    meths = state.widget(c1.multiselect, "Methods", "sal_methods",
                         default_saliency_methods(sal_lim, lim.get("attack") or {}, side), options=list(METHODS),
                         format_func=METHODS.get,
                         help="With ImageNet-size models, Integrated Gradients and SmoothGrad start unselected: "
                              "dozens of passes per map, seconds each on a CPU.")
    scale = state.widget(c2.radio, "Colour scale", "sal_scale", "map", options=list(SCALES), format_func=SCALES.get,
                         horizontal=True, help="Per map: each map's brightest pixel is 1 (where, within a map). "
                                               "Shared: one scale per method for every model, clean and adversarial "
                                               "(how strongly, across models).")
    spec, desc = attack_ui.controls(classes(), alim=lim.get("attack") or {}, input_size=side)
    state.sync_url({"image": img["image_id"], "models": ids, "sal_methods": meths,
                    "sal_scale": scale if scale != "map" else None,
                    **attack_ui.url_params(alim=lim.get("attack") or {})})
    if spec is None:
        return
    if not ids or not meths:
        st.info("Choose at least one model and one method.")
        return
    cells: dict[tuple[str, str], dict] = {}
    bars: dict[str, tuple] = {}
    with st.status(f"Computing {len(ids) * len(meths)} map pairs ({desc})...", expanded=False) as status:
        bar = st.progress(0.0)
        for i, meth in enumerate(meths):
            # every model's clean and adversarial maps, on the chosen scale, in one call per method
            maps = backend().saliency_maps(img["image_id"], ids, meth, spec=spec, scale=scale)
            if maps is not None:
                shared = maps["scale"] == "shared"
                bars[meth] = ("0", f"{maps['top']:.3g}", "shared scale") if shared else ("0", "1 = map top",
                                                                                       "per map")
                for m in ids:
                    met = backend().saliency_metrics(img["image_id"], m, meth, spec)  # the maps are cached now
                    if met is not None:
                        cells[(meth, m)] = {"metrics": met, **maps["results"][m], "shared": shared}
            bar.progress((i + 1) / len(meths))
        status.update(label=f"{len(cells)} map pairs ready ({desc})", state="complete")
    if not cells:
        return
    advs = backend(quiet=True).attack(img["image_id"], spec, ids, saliency=None)  # cached by the maps' attack
    k = per_block(len(ids))
    for b in range(0, len(ids), k):
        block = ids[b:b + k]
        widths = [0.7] + [1] * len(block)
        head = st.columns(widths)
        head[0].markdown("**image**")
        show_image(img["pixels"], caption="input", px=CELL_PX, where=head[0])
        for h, m in zip(head[1:], block):
            with h:
                model_header(by_id.get(m), m)
                # a property of the model's input gradient, the same whichever saliency method is shown
                align = next((cells[(meth, m)]["metrics"]["alignment"] for meth in meths if (meth, m) in cells), None)
                st.caption(f"gradient-image alignment {_fmt(align)}")
                a, b2 = st.columns(2)
                show_image(img["pixels"], caption="clean", px=CELL_PX, where=a)
                if advs is not None:
                    show_image(advs["results"][m]["adv_pixels"], caption="adversarial", px=CELL_PX, where=b2)
        for meth in meths:
            row = st.columns(widths)
            with row[0]:
                st.markdown(METHODS[meth])
                colour_bar(*bars[meth])
            for col, m in zip(row[1:], block):
                cell = cells.get((meth, m))
                if cell is None:
                    continue
                a, b2 = col.columns(2)
                show_image(heat_rgb(cell["clean"]), caption="clean", px=CELL_PX, where=a)
                show_image(heat_rgb(cell["adv"]), caption="adversarial", px=CELL_PX, where=b2)
                mt = cell["metrics"]
                dr = mt.get("drift") or {}
                # how bright this model's own maps can get on the shared scale (its top over the shared top)
                peak = cell["peak"] if cell["shared"] else None
                col.caption(f"del {_fmt(mt['deletion_auc'])} | ins {_fmt(mt['insertion_auc'])} | "
                            f"drift rho {_fmt(dr.get('spearman'))}, top-10% {_fmt(dr.get('topk_overlap'))}"
                            + ("" if peak is None else f" | peak {peak:.0%} of the shared top"))
    if scale == "shared":
        st.caption("Shared scale: per method, the model with the largest attributions sets the top. A standard "
                   "(cross-entropy) model's input gradients are typically several times larger than a robust "
                   "model's, so the robust models' maps look dark here: that is a difference in how strongly the "
                   "prediction reacts to pixels, not in where the model looks ('peak' says how bright each "
                   "model's maps can get). Switch to per map to compare where.")
    if "gradcam" in meths:
        st.caption("Grad-CAM weighs the last convolutional stage (4x4 cells on a 32-px image, in ResNet-18 and in "
                   "FastNet alike), upsampled: its maps are coarse blobs that look much alike for robust and standard "
                   "models. A plausible Grad-CAM blob says roughly where a model looks, not whether it is robust; "
                   "the gradient maps and the attacks show that.")
    st.caption("Gradient-image alignment (under each model's name): |cos| between the image and the model's input "
               "gradient for its predicted class, one number per model whatever the saliency method. It is small "
               "for every model (a 3,072-pixel gradient is never close to the image): compare it across models, "
               "where robust ones score several times higher on most images (README, saliency table). "
               "del / ins: area under the deletion (lower is better) and insertion (higher is better) curves. "
               "drift: rank correlation and top-10% overlap between the clean and adversarial maps.")

    rows = [{"model": m, "method": meth, "alignment": c["metrics"]["alignment"],
             "deletion_auc": c["metrics"]["deletion_auc"], "insertion_auc": c["metrics"]["insertion_auc"],
             "drift_spearman": (c["metrics"].get("drift") or {}).get("spearman"),
             "drift_topk_overlap": (c["metrics"].get("drift") or {}).get("topk_overlap"),
             "target_clean": c["target_clean"], "target_adv": c["target_adv"]}
            for (meth, m), c in cells.items()]
    st.subheader("Deletion and insertion curves")
    # a radio, not tabs: its choices wrap onto a second line where five model names do not fit one (tabs
    # would clip the last names at the page's edge)
    m = st.radio("Model", ids, format_func=lambda x: names.get(x, x), horizontal=True, key="auc_model",
                 label_visibility="collapsed")
    curves = {METHODS[meth]: (cells[(meth, m)]["metrics"]["deletion_curve"],
                              cells[(meth, m)]["metrics"]["insertion_curve"])
              for meth in meths if (meth, m) in cells}
    st.plotly_chart(charts.auc_curves(curves), width="stretch", key="auc_chart")
    st.caption("Pixels are removed (deletion, solid) or revealed (insertion, dashed) in the map's order; the "
               "curve is the model's probability for the class it predicts on the clean image.")
    df = pd.DataFrame(rows)
    grid_rows = [(f"{METHODS[meth]} {kind}", [heat_rgb(cells[(meth, m)][kind]) if (meth, m) in cells
                                              else None for m in ids])
                 for meth in meths for kind in ("clean", "adv")]
    e1, e2, e3 = st.columns(3)
    e1.download_button("Grid (PNG)", lambda: compose_grid_png([names.get(m, m) for m in ids], grid_rows,
                                                              f"{img['image_id']} - {desc}", px=96),
                       "robustlens_saliency.png", "image/png", on_click="ignore", icon=":material/image:")
    e2.download_button("Measures (CSV)", df.to_csv(index=False), "robustlens_saliency.csv", "text/csv",
                       on_click="ignore", icon=":material/table:")
    e3.download_button("Measures (JSON)", json.dumps({"image_id": img["image_id"], "spec": spec, "rows": rows},
                                                     indent=2, default=float),
                       "robustlens_saliency.json", "application/json", on_click="ignore",
                       icon=":material/data_object:")
    _sanity(ids)


def _sanity(ids: list[str]) -> None:
    st.subheader("Sanity check: does the map depend on what the model learned?")
    st.caption("The model's layers are re-initialised one stage at a time from the top (on a private copy). "
               "A faithful method's map changes (similarity falls toward 0); an edge detector's does not.")
    c1, c2, c3 = st.columns([1, 1, 0.6])
    m = c1.selectbox("Model", ids, format_func=lambda x: names.get(x, x), key="sanity_model")
    meth = c2.selectbox("Method", list(METHODS), format_func=METHODS.get, key="sanity_method")
    key = (img["image_id"], m, meth)
    if c3.button("Run sanity check", icon=":material/science:", key="sanity_run"):
        with st.spinner("Randomising the model stage by stage..."):
            res = backend().sanity_check(img["image_id"], m, meth)
        if res is not None:
            st.session_state["sanity"] = {"key": key, "res": res}
    saved = st.session_state.get("sanity")
    if not saved or saved["key"] != key:
        return
    res = saved["res"]
    a, b, c = st.columns([0.5, 0.5, 2])
    a.image(upscale(heat_rgb(res["heatmap"]), 140), caption="trained model", width=140)
    b.image(upscale(heat_rgb(res["heatmap_random"]), 140), caption="fully randomised", width=140)
    c.plotly_chart(charts.sanity_curve(res["stages"], res["similarity"], res.get("topk_overlap")),
                   width="stretch", key="sanity_chart")


studio()
