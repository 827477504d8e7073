"""Feature lens: what does each model think a class looks like? The chosen image pushed toward a target
class by a large-budget targeted attack (L2 or L-inf), what changed, the target probability step by
step, and class activation maximisation from noise. Drawn row by row (one st.columns per row, as the
attack lab's grid), so a row's pictures line up whatever the captions above them wrap to."""
from __future__ import annotations

import streamlit as st

from app.session import honesty, state, tasks
from app.session.client import backend, classes
from app.widgets import charts
from app.widgets.components import model_header, model_picker, page_setup, preview_text, show_image
from app.widgets.imaging import amplify_delta, compose_grid_png, delta_caption
from app.widgets.links import linked_open

SLOT = "classvis_queue"
PAGE = "feature_lens"
NORMS = {"l2": "L2 (large budget: features)", "linf": "L-inf (every pixel by at most eps)"}

st.title("Feature lens")
img, cards, names = page_setup(with_image=True)
by_id = {c["id"]: c for c in cards}
class_names = classes()
# before anything writes the URL: does the link name results (run=1), and can they be run here?
linked = linked_open(PAGE, list(by_id), button="Run the lens")

# the service's bounds and measured defaults (backend.explain.lens through capabilities()): the page needs them
lim = backend().capabilities() or {}
lens_lim = lim.get("lens") or {}
defaults = lens_lim.get("defaults")
if not defaults:
    st.stop()  # the backend could not be asked: backend() has shown why
robust_of = (lim.get("jobs") or {}).get("method_robust") or {}
previews = preview_text(cards)
default_budget = honesty.budget_label(defaults["norm"], defaults["eps"][defaults["norm"]])
measured = honesty.lens_measured_text(cards, robust_of, defaults["norm"], defaults["eps"][defaults["norm"]],
                                      where=f"at the default {default_budget}")
st.caption("Push an image hard toward another class and look at what changes. On robust models under a large L2 "
           "budget the change takes on shapes of the target class (Santurkar et al. 2019, with robust networks "
           "trained for many GPU-hours); a standard model reaches the class within a few steps and spends the rest "
           "of the budget on a fine speckle over the whole image."
           + (f" The shipped models are CPU previews ({previews})." if previews else "")
           + (f" {measured}" if measured else ""))
ids = model_picker(cards)
eps_lo, eps_hi = (round(v * 255) for v in lens_lim.get("eps", (1 / 255, 32 / 255)))
l2_lo, l2_hi = (float(v) for v in lens_lim.get("eps_l2", (0.1, 20.0)))
steps_lo, steps_hi = lens_lim.get("steps", (1, 200))
vis_lo, vis_hi = lens_lim.get("vis_steps", (1, 500))
norms = [n for n in NORMS if n in lens_lim.get("norms", list(NORMS))]
# outside the form, so the budget slider below follows the norm at once
norm = state.widget(st.radio, "Budget", "lens_norm", defaults["norm"], options=norms, format_func=NORMS.get,
                    horizontal=True, help="L2 limits the total size of the change (it may concentrate where the "
                                          "model wants); L-inf limits every pixel's change.")
with st.form("lens_settings"):
    c1, c2, c3 = st.columns(3)
    default_target = (int(img["label"]) + 1) % len(class_names) if img.get("label") is not None else 0
    target = state.widget(c1.selectbox, "Target class", "lens_target", default_target,
                          options=list(range(len(class_names))), format_func=lambda i: class_names[i])
    # the other norm's budget keeps its value (and a link's) for when the user switches back
    eps_k = state.get("lens_eps", round(defaults["eps"]["linf"] * 255), lo=eps_lo, hi=eps_hi)
    eps_l2 = state.get("lens_l2", float(defaults["eps"]["l2"]), lo=l2_lo, hi=l2_hi)
    if norm == "l2":
        eps_l2 = state.widget(c2.slider, "L2 budget eps", "lens_l2", float(defaults["eps"]["l2"]), lo=l2_lo,
                              hi=l2_hi, min_value=l2_lo, max_value=l2_hi, step=0.5,
                              help="The L2 size of the whole change (a 32-px image has 3,072 values; eps 6 is a "
                                   "root-mean-square change of 0.11, 28/255, per value). Step = 2.5 x eps / steps.")
    else:
        eps_k = state.widget(c2.slider, "eps (k/255)", "lens_eps", round(defaults["eps"]["linf"] * 255), lo=eps_lo,
                             hi=eps_hi, min_value=eps_lo, max_value=eps_hi,
                             help="Every pixel moves by at most eps. Step = 2.5 x eps / steps.")
    steps = state.widget(c3.number_input, "Steps", "lens_steps", int(defaults["steps"]), lo=steps_lo, hi=steps_hi,
                         min_value=steps_lo, max_value=steps_hi)
    vis_steps = state.widget(c3.number_input, "Class visualisation steps", "lens_vis_steps", 100, lo=vis_lo,
                             hi=vis_hi, min_value=vis_lo, max_value=vis_hi)
    go = st.form_submit_button("Run the lens", type="primary", icon=":material/play_arrow:")

eps = float(eps_l2) if norm == "l2" else int(eps_k) / 255.0
eps_text = honesty.budget_label(norm, eps)
lens_key = (img["image_id"], tuple(ids), int(target), norm, round(eps, 6), int(steps))
vis_key = (tuple(ids), int(target), int(vis_steps))
saved = st.session_state.get("lens")
q = tasks.get(SLOT)
if linked and not go:
    shown_image = state.url_value("image")
    if shown_image and shown_image != img["image_id"]:
        st.info(f"This link's lens was for {shown_image}, which is not shown here (see above), so it was not run. "
                "Press Run the lens to run it on this image.", icon=":material/info:")
    else:
        go = bool(ids)  # the link names these results: run them (from the service's cache when already run)
if go and ids:
    with st.spinner(f"Pushing {img['image_id']} toward '{class_names[target]}' on {len(ids)} model(s)..."):
        out = backend().feature_lens(img["image_id"], int(target), ids, eps=eps, steps=int(steps), norm=norm)
    if out is not None:
        saved = st.session_state["lens"] = {"key": lens_key, "res": out, "eps_text": eps_text}
    if not (q and q.get("key") == vis_key and q["state"] in ("running", "done")):
        tasks.start(SLOT, vis_key,
                    [{"label": "all models", "kind": "class_visualisation",
                      "params": {"target_class": int(target), "model_ids": ids, "steps": int(vis_steps), "seed": 0}}])
    q = tasks.get(SLOT)
elif go:
    st.warning("Choose at least one model.")

current = bool(saved and saved["key"] == lens_key and q and q.get("key") == vis_key and q["state"] == "done")
state.sync_url({"image": img["image_id"], "models": ids, "lens_target": target, "lens_norm": norm,
                "lens_eps": eps_k if norm == "linf" else None, "lens_l2": eps_l2 if norm == "l2" else None,
                "lens_steps": steps, "lens_vis_steps": vis_steps, state.RUN: 1 if current else None})

if tasks.running(SLOT):
    tasks.poller(SLOT, "Class visualisation")
vis = (q["results"].get("all models") or {}) if q else {}
if not saved and not vis:
    st.info("Choose a target class and press **Run the lens**.")
    st.stop()
if saved and saved["key"] != lens_key:
    st.caption("Settings changed since the last run: press Run the lens to update.")
tasks.report(SLOT)

lens_res = saved["res"] if saved else {}
shown = [m for m in ids if m in lens_res or m in vis]
k = len(shown) if len(shown) <= 5 else -(-len(shown) // 2)  # 6-8 models: two rows of columns
tgt_name = class_names[saved["key"][2]] if saved else class_names[int(target)]


def _toward(m: str) -> None:
    r = lens_res[m]
    # a short image caption: a caption wider than the picture widens the picture with it
    show_image(r["pixels"], caption=f"toward {tgt_name}: p={r['target_prob']:.2f}")
    st.caption(f"predicted {class_names[r['pred']]}")


def _change(m: str) -> None:
    pert, scale = amplify_delta(lens_res[m]["delta"])
    show_image(pert, caption=delta_caption(scale, "change"))


def _noise(m: str) -> None:
    show_image(vis[m]["pixels"], caption=f"from noise: p={vis[m]['target_prob']:.2f}")


rows = [lambda m: model_header(by_id.get(m), m)]
if lens_res:
    rows += [lambda m: _toward(m) if m in lens_res else None, lambda m: _change(m) if m in lens_res else None]
if vis:
    rows.append(lambda m: _noise(m) if m in vis else None)
for i in range(0, max(1, len(shown)), max(1, k)):
    block = shown[i:i + k]
    for draw in rows:  # one row of columns per kind of cell: a row's images start at the same height
        for col, m in zip(st.columns(max(1, k), vertical_alignment="top"), block):
            with col:
                draw(m)
st.caption(f"Top: the image after a targeted attack toward the class ({saved['eps_text'] if saved else eps_text}; "
           "its probability and the prediction after it). Middle: what changed, magnified. Bottom: an image grown from "
           "grey noise to maximise the class logit (with jitter and blur so it cannot be pure noise).")
paths_ids = [m for m in shown if m in lens_res and lens_res[m].get("path") is not None]
paths = {names.get(m, m): lens_res[m]["path"] for m in paths_ids}
if paths and saved:
    st.plotly_chart(charts.lens_paths(paths, tgt_name, title=f"p({tgt_name}) step by step"), width="stretch",
                    key="lens_paths")
    # what scripts/lens_budget.py measured on these models at the budget just run (from their cards)
    measured = honesty.lens_measured_text([by_id[m] for m in paths_ids], robust_of, saved["key"][3], saved["key"][4],
                                          where=f"at {saved['eps_text']}")
    st.caption("How each model's probability of the target class grows over the attack's steps: the budget a model "
               "needs is what makes its change large enough to look at. " + (f"{measured} " if measured else "")
               + "Grad-CAM (Saliency studio) is no help here: it weighs the last convolutional stage, so its maps are "
                 "coarse blobs for every model, and a plausible blob says where a model looks, not whether it is "
                 "robust.")
if lens_res or vis:
    grid = []
    if lens_res:
        grid += [("toward target", [lens_res[m]["pixels"] if m in lens_res else None for m in shown]),
                 ("change", [amplify_delta(lens_res[m]["delta"])[0] if m in lens_res else None for m in shown])]
    if vis:
        grid.append(("from noise", [vis[m]["pixels"] if m in vis else None for m in shown]))
    st.download_button("Grid (PNG)", lambda: compose_grid_png([names.get(m, m) for m in shown], grid,
                                                              f"{img['image_id']} -> {tgt_name}"),
                       "robustlens_lens.png", "image/png", on_click="ignore", icon=":material/image:")
