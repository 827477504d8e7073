"""Robustness: accuracy against eps for every chosen model (PGD and FGSM) on N class-balanced images,
run as background tasks with progress and cancel; then the flip matrix (true class -> prediction
under attack) per model and per-class robust accuracy. Below: accuracy against severity under the 15
common corruptions (a background task too), one panel per corruption."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import streamlit as st

from app.session import honesty, state, tasks
from app.session.client import backend, classes
from app.widgets import charts
from app.widgets.components import data_sources, dataset_info, model_picker, page_setup, source_noun
from app.widgets.links import linked_open

SLOT = "curve_queue"
CSLOT = "corruption_queue"
EPS_CHOICES = [0, 1, 2, 3, 4, 6, 8, 10, 12, 16, 24, 32]  # k/255

st.title("Robustness")
st.caption("How fast does accuracy fall as the attack budget grows? A point at eps counts the images a model "
           "classifies correctly both clean and after the attack. Solid lines: PGD; dashed: FGSM.")

_, cards, names = page_setup()
class_names = classes()
lim = backend(quiet=True).limits() or {}
src_opts, count = data_sources()
n_max = int((lim.get("curve") or {}).get("max_n") or 1000)
# the attacks the backend's registry offers for curves, with its labels (no list of them here)
curve_methods = list((lim.get("curve") or {}).get("methods") or [])
_attacks = (lim.get("attack") or {}).get("attacks") or {}


def _label(m: str) -> str:
    variants = (_attacks.get(m) or {}).get("variants") or [{}]
    return variants[0].get("label") or m


# before anything writes the URL: does the link name curves (run=1), and can they be computed here?
linked = linked_open("robustness", [c["id"] for c in cards], "rob_src", src_opts, dataset_info()["label"])
ids = model_picker(cards)
with st.form("curve_settings"):
    c1, c2, c3 = st.columns([1.3, 1, 1])
    eps = state.widget(c1.multiselect, "eps values (k/255)", "rob_eps", [0, 2, 4, 8, 16], options=EPS_CHOICES)
    methods = state.widget(c1.multiselect, "Attacks", "rob_methods", curve_methods, options=curve_methods,
                           format_func=_label)
    source = state.widget(c2.radio, "Images", "rob_src", src_opts[0], options=src_opts, horizontal=True,
                          format_func=lambda s: {"test": "test set", "samples": "offline samples",
                                                 "train": "train set"}[s])
    hi = min(n_max, max(count.values()))
    n = state.widget(c2.slider, "N images", "rob_n", min(100, hi), lo=1, hi=hi, min_value=1, max_value=hi,
                     step=1, help="Class-balanced and seeded: every model sees the same images.")
    steps = state.widget(c3.number_input, "PGD steps", "rob_steps", 5, lo=1, hi=50, min_value=1, max_value=50)
    seed = state.widget(c3.number_input, "Seed", "rob_seed", 0, lo=0, hi=10_000, min_value=0, max_value=10_000)
    go = st.form_submit_button("Run", type="primary", icon=":material/play_arrow:")
n_shown, n = n, min(int(n), count.get(source, n))
eps_list = [k / 255 for k in sorted(eps)]
key = {"models": ids, "eps": eps_list, "n": n, "steps": int(steps), "source": source, "seed": int(seed)}
go = go or (linked and bool(ids and eps and methods))  # a link naming curves runs them (the service's cache first)

if go:
    if not ids or not eps or not methods:
        st.warning("Choose at least one model, one eps value and one attack.")
    else:
        tasks.start(SLOT, key, [{"label": m, "title": _label(m), "kind": "robustness_curve",
                                 "params": {"model_ids": ids, "method": m, "eps_list": eps_list, "n": n,
                                            "steps": int(steps), "source": source, "seed": int(seed)}}
                                for m in methods])

q = tasks.get(SLOT)
current = bool(q and q["state"] == "done" and q["key"] == key
               and [it["label"] for it in q["items"]] == list(methods))
rob_url = {"models": ids, "rob_eps": eps, "rob_methods": methods, "rob_src": source, "rob_n": n_shown,
           "rob_steps": steps, "rob_seed": seed, state.RUN: 1 if current else None}
# the URL holds both sections' params: keep the corruption section's (read further down) until it draws
state.sync_url({**{k: st.query_params.get(k) for k in ("cor_group", "cor_n") if k in st.query_params}, **rob_url})


def corruption_section() -> None:
    """Accuracy against corruption severity: its own form, task queue and small-multiple chart."""
    clim = lim.get("corruptions") or {}
    names_c, labels_c = list(clim.get("names") or []), dict(clim.get("labels") or {})
    if not names_c:
        return
    st.divider()
    st.subheader("Common corruptions")
    st.caption("Accuracy as corruptions grow (CIFAR-10-C's 15 types at severities 1-5, regenerated here from "
               "the same seed for every model); severity 0 is clean accuracy. The cards' mCA numbers use "
               "1,000 test images; this runs on the N you choose.")
    with st.form("corruption_settings"):
        c1, c2, _ = st.columns([1.3, 1, 1])  # the curve form's columns: the slider gets the same width
        groups = {"all": names_c, **(clim.get("groups") or {})}  # a choice of groups, not 15 chips
        group = state.widget(c1.radio, "Corruptions", "cor_group", "all", options=list(groups), horizontal=True,
                             format_func=lambda g: "all 15" if g == "all" else g,
                             help="; ".join(f"{g}: " + ", ".join(labels_c.get(c, c) for c in groups[g])
                                            for g in groups if g != "all"))
        chosen = list(groups[group])
        hi_c = min(int(clim.get("max_n") or n_max), max(count.values()))
        n_c = state.widget(c2.slider, "N images", "cor_n", min(50, hi_c), lo=1, hi=hi_c, min_value=1, max_value=hi_c,
                           step=1, help="Class-balanced and seeded, from the images chosen above.")
        go_c = st.form_submit_button("Run corruptions", icon=":material/play_arrow:")
    state.sync_url({**rob_url, "cor_group": group if group != "all" else None, "cor_n": n_c})
    n_c = min(int(n_c), count.get(source, n_c))
    if go_c:
        if not ids:
            st.warning("Choose at least one model.")
        else:
            params = {"model_ids": ids, "corruptions": list(chosen), "n": n_c, "source": source, "seed": int(seed)}
            tasks.start(CSLOT, params, [{"label": "corruptions", "kind": "corruption_curve", "params": params}])
    if tasks.running(CSLOT):
        tasks.poller(CSLOT, "Corruption curves")
    cq = tasks.get(CSLOT)
    if cq is None:
        st.info("Choose corruptions and N, then press **Run corruptions** (about a second per corruption for "
                "50 images on a CPU; cancellable).")
        return
    tasks.report(CSLOT)
    cres = cq["results"].get("corruptions")
    if not cres:
        return
    ck = cq["key"]
    st.markdown(f"**{ck['n']} {ck['source']} images, seed {ck['seed']}** - mean accuracy over the corrupted "
                "images: " + ", ".join(f"{names.get(m, m)} {c['mca']:.1%} (clean {c['clean']:.1%})"
                                       for m, c in cres.items()))
    st.plotly_chart(charts.severity_curves(cres, names, labels_c), width="stretch", key="cor_curves")
    st.caption("One panel per corruption; a line per model. A model whose line stays flat keeps its accuracy "
               "as the corruption grows.")
    rows_c = [{"model": m, "corruption": c, "severity": sv, "accuracy": a, "n": r["n"]}
              for m, r in cres.items() for c, acc in r["accuracy"].items() for sv, a in zip(r["severities"], acc)]
    st.download_button("Corruption curves (CSV)", pd.DataFrame(rows_c).to_csv(index=False),
                       "robustlens_corruptions.csv", "text/csv", on_click="ignore", icon=":material/table:")


if tasks.running(SLOT):
    tasks.poller(SLOT, "Robustness curve")
if q is None:
    st.info("Choose models, eps values and N, then press **Run**. 100 images x 5 eps values take seconds per "
            "model with FGSM and longer with PGD on a CPU; you can cancel at any time.")
    corruption_section()
    st.stop()
tasks.report(SLOT)
res = q["results"]  # {"pgd"|"fgsm": {model id: curve}}
if not res:
    corruption_section()
    st.stop()
k = q["key"]
ran = [m.upper() for m in res]  # the attacks this run used: no "PGD 5 steps" on an FGSM-only run
st.markdown(f"**{k['n']} {source_noun(k['source'])} images, seed {k['seed']}, "
            + ", ".join(f"PGD {k['steps']} steps" if m == "PGD" else m for m in ran) + "**")

curves = {}
for meth, per_model in res.items():
    for m, c in per_model.items():
        curves[f"{m}/{meth}"] = {**c, "model": m, "method": meth}
by_id = {c["id"]: c for c in cards}
labels = {lab: f"{names.get(c['model'], c['model'])} - {c['method'].upper()}"
               f" ({honesty.accuracy_text(by_id.get(c['model'], {})) or 'not evaluated'})" for lab, c in curves.items()}
st.plotly_chart(charts.accuracy_curves(curves, labels), width="stretch", key="rob_curves")
st.caption("Accuracy at eps 0 is clean accuracy. A model whose curve stays high is robust; a steep drop at "
           "1-2/255 is typical for a standard (non-robust) classifier.")

meth = st.radio("Flip matrix and per-class accuracy for", list(res), horizontal=True,
                format_func=lambda m: m.upper(), key="rob_detail")
per_model = res[meth]
# many classes (ImageNet's 1000): only the classes the sample holds or the attack predicts, so it stays readable
shown = list(range(len(class_names)))
if len(class_names) > 20:
    shown = sorted({int(i) for c in per_model.values() for ax in (0, 1)
                    for i in np.flatnonzero(np.asarray(c["flip_matrix"]).sum(axis=ax))})
sub = np.ix_(shown, shown)
held = shown if len(class_names) <= 20 else sorted(  # per-class accuracy: the classes the sample holds
    {int(i) for c in per_model.values() for i in np.flatnonzero(np.asarray(c["flip_matrix"]).sum(axis=1))})
# two to a row: three leave a 10x10 matrix about 60 px wide on a 1024-px laptop page
cols = st.columns(min(2, len(per_model)))
flip_titles = {m: f"{names.get(m, m)} at {c['flip_eps'] * 255:.0f}/255" for m, c in per_model.items()}
title_lines = max(len(charts.wrap_title(t)) for t in flip_titles.values())
for i, (m, c) in enumerate(per_model.items()):
    cols[i % len(cols)].plotly_chart(
        charts.flip_matrix(np.asarray(c["flip_matrix"])[sub], [class_names[j] for j in shown],
                           title=flip_titles[m], title_lines=title_lines),
        width="stretch", key=f"flip_{meth}_{m}")
st.caption("Rows: true class; columns: prediction under attack (for images already wrong when clean, their "
           "clean prediction). The diagonal holds the images that survived; off-diagonal mass shows which "
           "classes the attack pushes images into.")
st.plotly_chart(charts.per_class({names.get(m, m): {"clean": np.asarray(c["per_class_clean"])[held],
                                                    "robust": np.asarray(c["per_class_robust"])[held]}
                                  for m, c in per_model.items()}, [class_names[j] for j in held]),
                width="stretch", key=f"perclass_{meth}")
st.caption("Per-class accuracy, clean (light) and under attack at the flip-matrix eps (solid).")



def _csv() -> str:
    rows = [{"model": c["model"], "method": c["method"], "eps": e, "eps_k255": round(e * 255, 3), "accuracy": a,
             "n": c["n"]} for c in curves.values() for e, a in zip(c["eps"], c["accuracy"])]
    return pd.DataFrame(rows).to_csv(index=False)


def _json() -> str:
    full = {meth_: {m: {kk: (v.tolist() if hasattr(v, "tolist") else v) for kk, v in c.items()}
                    for m, c in pm.items()} for meth_, pm in res.items()}
    return json.dumps({"settings": k, "results": full})


e1, e2 = st.columns(2)
e1.download_button("Curves (CSV)", _csv, "robustlens_curves.csv", "text/csv", on_click="ignore",
                   icon=":material/table:")
e2.download_button("Everything (JSON)", _json, "robustlens_curves.json", "application/json", on_click="ignore",
                   icon=":material/data_object:")
corruption_section()
