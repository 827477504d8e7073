"""Train: start a short training job (its own process), watch live curves (loss, clean and robust
validation accuracy, images/s, ETA), cancel or resume it, read its log. A finished model joins the
zoo and every page's model picker (the service re-reads the checkpoints folder)."""
from __future__ import annotations

import time

import streamlit as st

from app.session.client import backend
from app.widgets import charts


def preset_text(name: str, v: dict, use: str | None = None) -> str:
    """One line saying what preset `name` trains, from its registry values and use (Service.limits()
    jobs.preset_values / preset_use, i.e. backend.train.registry): never a copy of the numbers."""
    images = "every training image" if not v.get("subset") else f"{int(v['subset']):,} images"
    return (f"**{name}**: width {v['width']}, {v['epochs']} epoch{'s' if v['epochs'] != 1 else ''} on {images}, "
            f"batch {v['batch_size']}, {v['attack_steps']}-step PGD for the robust methods"
            + (f", {v['probe_epochs']}-epoch linear probe for the contrastive ones" if v.get("probe_epochs") else "")
            + (f" ({use})" if use else "") + ".")


ACTIVE = ("queued", "running")
BADGE = {"queued": "gray", "running": "blue", "done": "green", "failed": "red", "cancelled": "orange",
         "interrupted": "violet"}

st.title("Train")
st.caption("Training runs in its own process on the backend's machine, one job at a time; others wait in the "
           "queue. Closing the browser does not stop a job.")

limits = backend(quiet=True).limits() or {}
lim = limits.get("jobs") or {}
# every method and preset of the training registry, with its labels and values, comes from the backend
# (backend.train.registry through Service.limits()): a new one appears here by itself
methods, presets = list(lim.get("methods") or []), list(lim.get("presets") or [])
if not methods or not presets:
    st.error("The backend did not say which training methods and presets it offers; reload once it answers.",
             icon=":material/error:")
    st.stop()
titles, preset_labels = lim.get("method_titles") or {}, lim.get("preset_labels") or {}
preset_values, preset_use = lim.get("preset_values") or {}, lim.get("preset_use") or {}
PRESET_HELP = "  \n".join(preset_text(p, preset_values[p], preset_use.get(p))
                          for p in presets if p in preset_values) or None
datasets = list(lim.get("datasets") or [])  # the data sets whose training images the backend holds
sources = backend(quiet=True).image_sources() or {}
# a job trains on the backend's train split (or on synthetic data where the backend is set up so)
can_train = bool(lim.get("synthetic_data")) or bool((sources.get("train") or {}).get("available"))

with st.form("new_job"):
    c1, c2 = st.columns(2)
    method = c1.selectbox("Method", methods, format_func=lambda m: titles.get(m, m), key="job_method")
    preset = c2.selectbox("Preset", presets, format_func=lambda p: preset_labels.get(p, p), key="job_preset",
                          index=presets.index("short") if "short" in presets else 0, help=PRESET_HELP)
    name = c1.text_input("Name (optional)", max_chars=int(lim["name_chars"]), key="job_name")
    # a choice only where the backend holds more than one data set's training images
    dataset = c2.selectbox("Data set", datasets, key="job_dataset") if len(datasets) > 1 else None
    # the trainable architectures (backend.core.archs_meta.TRAINABLE), labelled by the architecture registry
    arch_labels = {n: d.get("label", n) for n, d in (limits.get("architectures") or {}).items()}
    arch_names = list(lim.get("archs") or ["resnet18"])
    arch = c1.selectbox("Architecture", arch_names, key="job_arch", format_func=lambda a: arch_labels.get(a, a),
                        help="ResNet-18 is the paper's network; FastNet is a compact network that gets more "
                             "accuracy out of a CPU hour (README, 'Training recipe').")
    with st.expander("Override the preset"):
        o1, o2, o3 = st.columns(3)
        width = o1.selectbox("Width", [None] + list(lim["widths"]), key="job_width",
                             format_func=lambda w: "preset" if w is None else str(w))
        e_lo, e_hi = lim["epochs"]
        epochs = o1.number_input("Epochs", e_lo, e_hi, value=None, step=1, placeholder="preset", key="job_epochs")
        s_lo, s_hi = lim["subset"]
        subset = o2.number_input("Training images", s_lo, s_hi, value=None, step=500, placeholder="preset",
                                 key="job_subset")
        a_lo, a_hi = lim["attack_steps"]
        steps = o2.number_input("PGD steps (training attack)", a_lo, a_hi, value=None, step=1,
                                placeholder="preset", key="job_steps")
        b_lo, b_hi = lim["batch_size"]
        batch = o3.number_input("Batch size", b_lo, b_hi, value=None, step=32, placeholder="preset", key="job_batch")
        seed = o3.number_input("Seed", *lim["seed"], value=0, step=1, key="job_seed")
    start = st.form_submit_button("Start training", type="primary", icon=":material/play_arrow:")
if PRESET_HELP:  # all of them: inside the form, the chosen preset is only known after Start
    st.caption("Presets: " + PRESET_HELP + "  \nOverrides replace single values.")

if start and not can_train:
    st.warning("Training needs a data set's training images, and the backend has none: point RSUPCON_DATA at a "
               "data folder (a torchvision root such as CIFAR-10's, or an ImageFolder tree with train/ and test/) "
               "and restart the app. The offline sample images are enough for every other page, not for training.",
               icon=":material/database_off:")
elif start:
    config = {"method": method, "preset": preset, "dataset": dataset, "name": name.strip() or None,
              "arch": arch, "width": width,
              "epochs": None if epochs is None else int(epochs), "subset": None if subset is None else int(subset),
              "attack_steps": None if steps is None else int(steps),
              "batch_size": None if batch is None else int(batch),
              "seed": int(seed)}
    job = backend().start_job({k: v for k, v in config.items() if v is not None})
    if job is not None:
        st.session_state["job_selected"] = job["job_id"]
        st.toast(f"Job {job['name']} queued", icon=":material/model_training:")

jobs = backend().list_jobs() or []
if not jobs:
    st.info("No jobs yet. The short preset trains a small model in a few minutes; it then appears in the model "
            "zoo and in every page's model picker.")
    st.stop()


def _ago(t) -> str:
    """'01:05:12 (3 min ago)': the clock time, and the age as of this run (the table reruns every
    2 s while a job is active, so the age keeps moving)."""
    if not t:
        return ""
    s = max(0, time.time() - float(t))
    ago = f"{s:.0f} s ago" if s < 120 else f"{s / 60:.0f} min ago" if s < 7200 else f"{s / 3600:.1f} h ago"
    return f"{time.strftime('%H:%M:%S', time.localtime(float(t)))} ({ago})"


def _table(jobs: list[dict]) -> None:
    st.dataframe([{"job": j["job_id"], "name": j["name"], "method": j["method"], "state": j["state"],
                   "created": _ago(j.get("created")), "model": j.get("checkpoint") or ""} for j in jobs],
                 hide_index=True, width="stretch")


def _points(events: list[dict]) -> list[dict]:
    """Events -> chart points with x = fractional epoch."""
    pts = []
    for e in events:
        if e.get("type") == "progress" and e.get("steps_per_epoch"):
            x = (e.get("epoch") or 1) - 1 + (e.get("step") or 0) / e["steps_per_epoch"]
            pts.append({"x": round(x, 3), "loss": e.get("loss"), "ips": e.get("images_per_s")})
        elif e.get("type") in ("epoch", "done") and (e.get("val_clean") is not None
                                                     or e.get("val_robust") is not None):
            # "done" carries the final model's validation (after the linear probe for contrastive methods)
            pts.append({"x": e.get("epoch"), "val_clean": e.get("val_clean"), "val_robust": e.get("val_robust")})
    return pts


def _detail(job_id: str) -> bool:
    """Draw one job; returns whether it is still active."""
    job = backend().job_status(job_id)
    if job is None:
        return False
    cache = st.session_state.setdefault("job_events", {})
    rec = cache.get(job_id) or {"since": 0, "events": []}
    new = backend(quiet=True).job_events(job_id, rec["since"]) or []
    rec = {"since": rec["since"] + len(new), "events": rec["events"] + new}
    cache[job_id] = rec
    events = rec["events"]
    st.markdown(f"### {job['name']} :{BADGE.get(job['state'], 'gray')}-badge[{job['state']}]")
    prog = job.get("progress") or next((e for e in reversed(events) if e.get("type") in ("progress", "epoch")), None)
    if prog:
        ep, eps_total = prog.get("epoch") or 0, prog.get("epochs") or 1
        frac = ((ep - 1) + (prog.get("step") or 0) / max(1, prog.get("steps_per_epoch") or 1)) / eps_total \
            if prog.get("type") == "progress" else ep / eps_total
        eta = prog.get("eta_s")
        st.progress(min(1.0, max(0.0, frac)),
                    text=f"epoch {ep}/{eps_total}" + (f" - {prog['images_per_s']:.0f} images/s"
                                                      if prog.get("images_per_s") else "")
                    + (f" - ETA {eta / 60:.1f} min" if eta and job["state"] in ACTIVE else ""))
    start = next((e for e in reversed(events) if e.get("type") == "start"), None)
    if start and start.get("message"):
        st.caption(start["message"])
    elif job["state"] in ACTIVE:
        st.caption("Starting the trainer (loading data and the model)...")
    pts = _points(events)
    if pts:
        st.plotly_chart(charts.training_curves(pts), width="stretch", key=f"curves_{job_id}")
        st.caption("Loss per logging window; validation accuracy on held-out training images, clean and under "
                   "the training PGD attack; throughput in images per second.")
    # the actions this state allows, left to right from the first column (no gap where one is missing)
    actions = [(label, icon, op) for label, icon, op, states in (
        ("Cancel", ":material/cancel:", backend().cancel_job, ACTIVE + ("interrupted",)),
        ("Resume", ":material/replay:", backend().resume_job, ("interrupted", "failed", "cancelled")))
        if job["state"] in states]
    for col, (label, icon, op) in zip(st.columns([1, 1, 3]), actions):
        if col.button(label, icon=icon, key=f"{label.lower()}_{job_id}"):
            op(job_id)
            st.rerun()
    if job["state"] == "done" and job.get("checkpoint"):
        st.success(f"Finished: the model **{job['checkpoint']}** is in the zoo and every model picker.",
                   icon=":material/check_circle:")
        st.page_link("views/zoo.py", label="Open the model zoo", icon=":material/inventory_2:")
    if job.get("error"):
        st.error(job["error"], icon=":material/error:")  # the log is below (job_log; the record's log_tail)
    with st.expander("Log (last 60 lines)", expanded=job["state"] in ("failed",)):
        st.code(backend(quiet=True).job_log(job_id, 60) or "(empty)", language=None)
    with st.expander("Configuration"):
        st.json(job.get("config") or {})
    return job["state"] in ACTIVE


def _jobs_section() -> None:
    """The job table, the job chooser and the chosen job; while a job is active this is a fragment
    that reruns every 2 s (nothing polls when no job is active)."""
    jobs = backend().list_jobs() or []
    st.subheader("Jobs")
    _table(jobs)
    ids = [j["job_id"] for j in jobs]
    labels = {j["job_id"]: f"{j['name']} - {j['job_id']}" for j in jobs}  # no state: it changes under the widget
    if st.session_state.get("job_selected") not in ids:
        st.session_state["job_selected"] = ids[0]
    sel = st.selectbox("Job", ids, format_func=labels.get, key="job_selected")
    if sel:
        _detail(sel)
    if st.session_state.get("_jobs_live") and not any(j["state"] in ACTIVE for j in jobs):
        st.rerun()  # the last job ended: redraw the page once (model pickers), which stops the polling


if any(j["state"] in ACTIVE for j in jobs):
    st.session_state["_jobs_live"] = True
    st.fragment(_jobs_section, run_every=2.0)()
else:
    st.session_state["_jobs_live"] = False
    _jobs_section()
