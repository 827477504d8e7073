"""Feature lens: what does each model think a class looks like? Left: the chosen image pushed toward a
target class by a large-eps targeted attack (robust models paint visible features of that class; a
standard model changes invisible noise). Right: class activation maximisation from noise."""
from __future__ import annotations

import streamlit as st

from app.session import state, tasks
from app.session.client import call, classes
from app.widgets.components import model_header, model_picker, page_setup, show_image
from app.widgets.imaging import amplify_delta, compose_grid_png, delta_caption

SLOT = "classvis_queue"

st.title("Feature lens")
st.caption("Perceptually aligned gradients: push an image hard toward another class and look at what changes. "
           "A robust model has to draw the class; a standard one gets there with noise you cannot see.")

img, cards, names = page_setup(with_image=True)
by_id = {c["id"]: c for c in cards}
class_names = classes()

ids = model_picker(cards)
# the service's bounds (backend.explain.lens.LENS_LIMITS through limits()); these values if it cannot be asked
lens_lim = (call("limits", quiet=True) or {}).get("lens") or {}
eps_lo, eps_hi = (round(v * 255) for v in lens_lim.get("eps", (1 / 255, 32 / 255)))
steps_lo, steps_hi = lens_lim.get("steps", (1, 200))
vis_lo, vis_hi = lens_lim.get("vis_steps", (1, 500))
with st.form("lens_settings"):
    c1, c2, c3 = st.columns(3)
    default_target = (int(img["label"]) + 1) % len(class_names) if img.get("label") is not None else 0
    target = state.widget(c1.selectbox, "Target class", "lens_target", default_target,
                          options=list(range(len(class_names))), format_func=lambda i: class_names[i])
    eps_k = state.widget(c2.slider, "eps (k/255)", "lens_eps", 16, lo=eps_lo, hi=eps_hi, min_value=eps_lo,
                         max_value=eps_hi, help="Large on purpose: 16/255 lets a robust model paint visible features.")
    steps = state.widget(c3.number_input, "Steps", "lens_steps", 40, lo=steps_lo, hi=steps_hi, min_value=steps_lo,
                         max_value=steps_hi)
    vis_steps = state.widget(c3.number_input, "Class visualisation steps", "lens_vis_steps", 100, lo=vis_lo,
                             hi=vis_hi, min_value=vis_lo, max_value=vis_hi)
    go = st.form_submit_button("Run the lens", type="primary", icon=":material/play_arrow:")
state.sync_url({"image": img["image_id"], "models": ids, "lens_target": target, "lens_eps": eps_k,
                "lens_steps": steps, "lens_vis_steps": vis_steps})

lens_key = (img["image_id"], tuple(ids), int(target), int(eps_k), int(steps))
if go and ids:
    with st.spinner(f"Pushing {img['image_id']} toward '{class_names[target]}' on {len(ids)} model(s)..."):
        out = call("feature_lens", img["image_id"], int(target), ids, eps=eps_k / 255.0, steps=int(steps))
    if out is not None:
        st.session_state["lens"] = {"key": lens_key, "res": out}
    tasks.start(SLOT, (tuple(ids), int(target), int(vis_steps)),
                [{"label": "all models", "kind": "class_visualisation",
                  "params": {"target_class": int(target), "model_ids": ids, "steps": int(vis_steps), "seed": 0}}])
elif go:
    st.warning("Choose at least one model.")

if tasks.running(SLOT):
    tasks.poller(SLOT, "Class visualisation")
saved = st.session_state.get("lens")
q = tasks.get(SLOT)
vis = (q["results"].get("all models") or {}) if q else {}
if not saved and not vis:
    st.info("Choose a target class and press **Run the lens**.")
    st.stop()
if saved and saved["key"] != lens_key:
    st.caption("Settings changed since the last run: press Run the lens to update.")
tasks.report(SLOT)

lens_res = saved["res"] if saved else {}
shown = [m for m in ids if m in lens_res or m in vis]
k = len(shown) if len(shown) <= 5 else -(-len(shown) // 2)  # 6-8 models: two rows
cells = []
for i in range(0, max(1, len(shown)), max(1, k)):
    cells += list(zip(st.columns(max(1, k)), shown[i:i + k]))
for col, m in cells:
    with col:
        model_header(by_id.get(m), m)
        if m in lens_res:
            r = lens_res[m]
            show_image(r["pixels"], caption=f"toward {class_names[saved['key'][2]]}: p={r['target_prob']:.2f}, "
                                            f"predicted {class_names[r['pred']]}")
            pert, scale = amplify_delta(r["delta"])
            show_image(pert, caption=delta_caption(scale, "change"))
        if m in vis:
            show_image(vis[m]["pixels"], caption=f"from noise: p={vis[m]['target_prob']:.2f}")
st.caption("Top: the image after a targeted L-inf attack toward the class (its probability and the new prediction). "
           "Middle: what changed, magnified. Bottom: an image grown from grey noise to maximise the class "
           "logit (with jitter and blur so it cannot be pure noise).")
if lens_res or vis:
    rows = []
    if lens_res:
        rows += [("toward target", [lens_res[m]["pixels"] if m in lens_res else None for m in shown]),
                 ("change", [amplify_delta(lens_res[m]["delta"])[0] if m in lens_res else None for m in shown])]
    if vis:
        rows.append(("from noise", [vis[m]["pixels"] if m in vis else None for m in shown]))
    st.download_button("Grid (PNG)", lambda: compose_grid_png([names.get(m, m) for m in shown], rows,
                                                              f"{img['image_id']} -> {class_names[int(target)]}"),
                       "robustlens_lens.png", "image/png", on_click="ignore", icon=":material/image:")
