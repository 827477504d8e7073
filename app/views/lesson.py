"""Lesson: six steps a teacher presses through in class, each a live view over the installed models of the
chosen data set with one sentence and the numbers measured on the spot. The step and the image live in
the URL (lesson?step=draws&image=samples:3). The service calls behind the steps are written once in
app.session.lesson and made at launch for the default sample, so a class opening the link is
answered from the service's caches. Works offline on the sample images (step 5 maps the samples)."""
from __future__ import annotations

import streamlit as st

from app.session import honesty, lesson, state
from app.session.client import backend, classes, current_dataset
from app.widgets import charts
from app.widgets.components import badge, model_header, page_setup, prob_bars, show_image
from app.widgets.imaging import amplify_delta, delta_caption, heat_rgb

st.title("Lesson")
st.caption("Six steps through what adversarial robustness changes, on the models installed here. Press **Next** "
           "to go on; the address bar holds the step and the image, so a link takes a class to the same view.")

img, cards, names = page_setup(with_image=True)
class_names = classes()
by_id = {c["id"]: c for c in cards}
ids = lesson.models_of(cards, current_dataset())
lim = backend(quiet=True).limits() or {}
robust_of = (lim.get("jobs") or {}).get("method_robust") or {}
robust = [m for m in ids if robust_of.get(str(by_id[m].get("method"))) is True]
standard = [m for m in ids if robust_of.get(str(by_id[m].get("method"))) is False]

titles = {s.key: f"{i + 1}. {s.title}" for i, s in enumerate(lesson.STEPS)}
step = state.widget(st.radio, "Step", "step", lesson.STEP_KEYS[0], options=list(lesson.STEP_KEYS),
                    format_func=titles.get, horizontal=True, label_visibility="collapsed")
i = lesson.STEP_KEYS.index(step)
state.sync_url({"image": img["image_id"], "step": step})


def _go(k: int) -> None:
    state.put("step", lesson.STEP_KEYS[k])


# a horizontal container sizes each button to its label (fixed column fractions cut "Previous" to "P." on a
# 1024-px page)
nav = st.container(horizontal=True)
nav.button("Previous", key="lesson_prev", disabled=i == 0, on_click=_go, args=(max(0, i - 1),),
           icon=":material/arrow_back:")
nav.button("Next", key="lesson_next", disabled=i == len(lesson.STEPS) - 1, on_click=_go,
           args=(min(len(lesson.STEPS) - 1, i + 1),), type="primary", icon=":material/arrow_forward:")

info = lesson.STEPS[i]
st.subheader(titles[step])
st.markdown(info.text)
req = lesson.requests(lim, cards, ids, img["image_id"], img.get("label"), len(class_names))
label = img.get("label")


def _columns(models: list[str], rows) -> None:
    """One row of columns per kind of cell (as the attack lab's grid), at most 5 models per row."""
    k = min(5, max(1, len(models)))
    for j in range(0, len(models), k):
        block = models[j:j + k]
        for draw in rows:
            for col, m in zip(st.columns(k, vertical_alignment="top"), block):
                with col:
                    draw(m)


def _name(m: str) -> str:
    return names.get(m, m)


if step in ("fool", "hold", "change", "looks"):
    args, kw = req["attack"]
    with st.spinner("Attacking every model..."):
        res = backend().attack(*args, **kw)
    if res is None:
        st.stop()
    r = res["results"]
    eps_k = round(float(req["spec"].get("eps", 0)) * 255)

    def fooled(m: str) -> bool:
        return r[m]["adv"]["pred"] != r[m]["clean"]["pred"]

    if step == "fool":
        shown = standard or ids[-1:]
        st.caption(" ".join(f"{_name(m)}: {class_names[r[m]['clean']['pred']]} before, "
                            f"{class_names[r[m]['adv']['pred']]} after an attack that moved every pixel by at most "
                            f"{eps_k}/255." for m in shown))
        for m in shown:
            model_header(by_id.get(m), m)
            a, b, _ = st.columns([1, 1, 2])
            show_image(img["pixels"], caption="clean", where=a)
            prob_bars(r[m]["clean"]["top"], label, where=a)
            show_image(r[m]["adv_pixels"], caption="attacked", where=b)
            prob_bars(r[m]["adv"]["top"], label, where=b)
    elif step == "hold":
        held_r = [m for m in robust if not fooled(m)]
        held_s = [m for m in standard if not fooled(m)]
        st.caption(f"On this image: {len(held_r)} of {len(robust)} adversarially trained model(s) and {len(held_s)} of "
                   f"{len(standard)} standard one(s) keep their answer. One image is one draw: the cards' PGD-20 "
                   "accuracy (under each name) says how often over 2,000 test images.")
        _columns(ids, [lambda m: model_header(by_id.get(m), m),
                       lambda m: show_image(r[m]["adv_pixels"], caption=f"predicts {class_names[r[m]['adv']['pred']]}"),
                       lambda m: badge("fooled" if fooled(m) else "held", "red" if fooled(m) else "green")])
    elif step == "change":
        def _delta(m: str) -> None:
            pert, scale = amplify_delta(r[m]["delta"])
            show_image(pert, caption=f"{delta_caption(scale, 'change')}, L2 {r[m]['l2']:.2f}")
        _columns(ids, [lambda m: model_header(by_id.get(m), m), _delta])
    else:
        if not all(r[m].get("saliency_clean") is not None for m in ids):
            st.warning("The backend returned no saliency maps for this image.")
            st.stop()
        sal_info = ((lim.get("saliency") or {}).get("info") or {}).get(req["saliency"] or "", {})
        sal = sal_info.get("label", req["saliency"])
        st.caption(f"{sal}, each map scaled to its own brightest pixel: compare where, not how strongly.")
        _columns(ids, [lambda m: model_header(by_id.get(m), m),
                       lambda m: show_image(heat_rgb(r[m]["saliency_clean"]), caption=f"{sal} on the clean image")])
elif step == "embedding":
    maps = {}
    with st.spinner(f"Mapping {lesson.EMBED_N} sample images per model..."):
        for m, kw in req["embed"].items():
            out = backend().embed(m, **kw)
            if out is not None:
                maps[m] = out
    flips = {m: int((res["pred_adv"] != res["pred_clean"]).sum()) for m, res in maps.items()
             if res.get("pred_adv") is not None}
    st.caption("Changed predictions of " + str(lesson.EMBED_N) + " images: "
               + ", ".join(f"{_name(m)} {n}" for m, n in flips.items()) + ".")
    done = list(maps)
    for j in range(0, len(done), 2):
        for col, m in zip(st.columns(2), done[j:j + 2]):
            col.altair_chart(charts.embedding_map(maps[m], class_names, title=_name(m), dataset=current_dataset()),
                             width="stretch", key=f"lesson_emb_{m}")
else:  # draws
    args, kw = req["lens"]
    with st.spinner(f"Pushing the image toward '{class_names[req['target']]}' on every model..."):
        out = backend().feature_lens(*args, **kw)
    if out is None:
        st.stop()
    tgt = class_names[req["target"]]
    budget = honesty.budget_label(kw["norm"], kw["eps"])
    measured = honesty.lens_measured_text([by_id[m] for m in ids], robust_of, kw["norm"], kw["eps"])
    st.caption(f"Toward **{tgt}**, {budget}, {kw['steps']} steps." + (f" {measured}" if measured else ""))

    def _toward(m: str) -> None:
        show_image(out[m]["pixels"], caption=f"p({tgt})={out[m]['target_prob']:.2f}")
        st.caption(f"predicts {class_names[out[m]['pred']]}")

    def _delta(m: str) -> None:
        pert, scale = amplify_delta(out[m]["delta"])
        show_image(pert, caption=delta_caption(scale, "change"))

    _columns(ids, [lambda m: model_header(by_id.get(m), m), _toward, _delta])
    st.plotly_chart(charts.lens_paths({_name(m): out[m]["path"] for m in ids if m in out}, tgt,
                                      title=f"p({tgt}) step by step"), width="stretch", key="lesson_paths")
