"""Model zoo: a card per model (method, architecture, data, status, measured accuracy with N, training
cost), then one comparison table and chart, with CSV / JSON export."""
from __future__ import annotations

import json

import pandas as pd
import streamlit as st

from app.session import state, tasks
from app.session.client import all_models, backend
from app.widgets import charts
from app.widgets.components import no_models_notice

st.title("Model zoo")
st.caption("Every installed model with what was measured on it. Accuracies are fractions of N test images; "
           "PGD-20 is L-inf eps 8/255 unless the card says otherwise; AutoAttack is the strongest check.")

IMPORT_SLOT = "zoo_import"
SOURCE_LABELS = {"robustbench": "RobustBench model zoo", "torchvision": "torchvision", "timm": "timm"}


def import_section() -> None:
    """Import a published model by name: a background task with a progress bar and a cancel button.
    Files and code are imported on the command line only (`python -m backend.imports`)."""
    lim = (backend(quiet=True).limits() or {}).get("imports")
    if not lim:
        return
    st.subheader("Import a model")
    avail = [s for s in lim["sources"] if lim["available"].get(s)]
    missing = [s for s in lim["sources"] if s not in avail]
    if missing:
        st.caption(f"{', '.join(missing)}: the optional extra (`{lim['extra']}`).")
    if not avail:
        return
    c1, c2, c3, c4 = st.columns([1.1, 1.4, 1, 1])
    source = c1.selectbox("Source", avail, format_func=lambda s: SOURCE_LABELS.get(s, s), key="imp_source")
    rb = source == "robustbench"
    name = c2.text_input("Model name", key="imp_name", placeholder="Carmon2019Unlabeled" if rb else "resnet50",
                         help="RobustBench: a leaderboard name; torchvision / timm: the model's name.")
    ds_opts = lim["robustbench_datasets"] if rb else lim["datasets"]
    dataset = c3.selectbox("Data set", ds_opts, index=0 if rb else ds_opts.index("imagenet"), key="imp_ds")
    threat = None  # torchvision / timm: no threat model (the import's declared default)
    if rb:
        threat = c4.selectbox("Threat model", lim["threat_models"], key="imp_threat")
        pretrained = False
    else:
        pretrained = c4.checkbox("Published weights", key="imp_pretrained",
                                 help="Download the library's trained weights (needs internet); off: random weights.")
    st.caption("RobustBench models and published weights are downloaded when online (a file already in "
               "RobustBench's model folder is read without downloading). The model then appears above; "
               "measure it with `python -m backend.eval.evaluate --checkpoint checkpoints/<id>`.")
    if st.button("Import", icon=":material/download:", disabled=not name.strip(), key="imp_go"):
        params = {"source": source, "name": name.strip(), "dataset": dataset, "pretrained": pretrained,
                  **({"threat_model": threat} if threat else {})}
        tasks.start(IMPORT_SLOT, params, [{"label": name.strip(), "kind": "import_model", "params": params}])
    if tasks.running(IMPORT_SLOT):
        tasks.poller(IMPORT_SLOT, "Importing")
    q = tasks.get(IMPORT_SLOT)
    if q and not tasks.running(IMPORT_SLOT):
        tasks.report(IMPORT_SLOT)
        for res in q["results"].values():
            st.success(f"Imported **{res['model_id']}** ({res['card'].get('display_name')}).",
                       icon=":material/check_circle:")


cards = all_models()  # every data set's models
state.sync_url({})
if not cards:
    no_models_notice()
    import_section()
    st.stop()


def _pct(card: dict, key: str) -> str:
    m = card.get("metrics") or {}
    v = m.get(key)
    if v is None:
        return "not measured"
    n = m.get(f"n_{key}")
    return f"{float(v):.1%}" + (f" (N={int(n)})" if n else "")


def _mca(card: dict) -> str:
    m = card.get("metrics") or {}
    c = m.get("corruptions") or {}
    if m.get("mca") is None:
        return "not measured"
    kind = "official" if str(c.get("variant", "")).startswith("official") else "regenerated"
    return f"{float(m['mca']):.1%} (15 x 5, N={c.get('n', '?')} per cell, {kind})"


def _mauroc(card: dict) -> str:
    m = card.get("metrics") or {}
    sets = ((m.get("ood") or {}).get("sets") or {})
    if m.get("mauroc") is None:
        return "not measured"
    return f"{float(m['mauroc']):.1%} ({len(sets)} outlier sets: {', '.join(sets)})"


def _hours(card: dict) -> str:
    t = (card.get("training") or {}).get("time_s")
    if t is None:
        return "?"
    t = float(t)
    return f"{t / 3600:.1f} h" if t >= 3600 else f"{t / 60:.1f} min" if t >= 60 else f"{t:.0f} s"


def _short_note(notes: str, limit: int = 140) -> str:
    """The note's first sentence, without command lines (those are in the expander)."""
    first = notes.split("`")[0].split(". ")[0].strip().rstrip(".:( ")
    return (first[:limit - 3] + "...") if len(first) > limit else first


def _provenance(p: dict) -> str:
    """Where an imported model comes from: source, name, version, licence, sha256 prefix of the file."""
    parts = [f"from {p.get('source') or '?'}: {p.get('name') or '?'}"]
    parts += [f"version {p['version']}" if p.get("version") else "version unknown",
              f"licence {p['licence']}" if p.get("licence") else "licence unknown"]
    if p.get("sha256"):
        parts.append(f"sha256 {str(p['sha256'])[:12]}")
    return " · ".join(parts)


def _status_badge(status: str) -> str:
    colour = {"shipped": "green", "cpu-preview": "orange", "experimental": "violet", "test": "gray"}
    return f":{colour.get(status, 'blue')}-badge[{status}]"


cols = st.columns(3)
for i, c in enumerate(cards):
    with cols[i % 3].container(border=True):
        st.markdown(f"**{c.get('display_name') or c['id']}**  \n`{c['id']}`")
        method = "" if c.get("method") == c.get("status") else f":blue-badge[{c.get('method', '?')}] "
        st.markdown(f"{_status_badge(str(c.get('status', '?')))} {method}"
                    f":gray-badge[{c.get('arch', '?')}{'' if c.get('width') is None else ' w' + str(c['width'])}"
                    f"{'' if not c.get('input_size') else ' ' + str(c['input_size']) + ' px'}]")
        tr = c.get("training") or {}
        measured_on = ((c.get("metrics") or {}).get("eval") or {}).get("data_variant")
        on = "" if not measured_on or measured_on == c.get("data_variant") else f" (measured on {measured_on})"
        st.markdown(
            f"- data: {c.get('dataset', '?')} / {c.get('data_variant', '?')}{on}\n"
            f"- clean: {_pct(c, 'clean')}\n- PGD-20: {_pct(c, 'pgd20')}\n- AutoAttack: {_pct(c, 'autoattack')}\n"
            f"- corruptions (mCA): {_mca(c)}\n- OOD detection (mAUROC, MSP): {_mauroc(c)}\n"
            + (f"- trained elsewhere ({c['provenance'].get('source', '?')}), not by RobustLens" if c.get("provenance")
               else f"- trained: {_hours(c)} on {tr.get('hardware', '?')}"
               + (f", {tr['epochs']} epochs" if tr.get("epochs") is not None else "")))
        if c.get("provenance"):
            st.caption(_provenance(c["provenance"]))
        if c.get("notes"):
            st.caption(_short_note(c["notes"]))
            with st.expander("How it was made (commands)"):
                st.code(c["notes"], language=None, wrap_lines=True)

st.subheader("Comparison")
rows = []
for c in cards:
    m, tr = c.get("metrics") or {}, c.get("training") or {}
    # method and architecture are on the cards above (and in the CSV): the table keeps what compares,
    # narrow enough for a 1024 px window
    rows.append({"model": c["id"], "status": c.get("status"), "clean": m.get("clean"), "pgd20": m.get("pgd20"),
                 "autoattack": m.get("autoattack"), "mca": m.get("mca"), "mauroc": m.get("mauroc"),
                 "N": "/".join(str(m.get(k) or "-") for k in ("n_clean", "n_pgd20", "n_autoattack")),
                 "train time": _hours(c)})
full = [{"model": c["id"], "name": c.get("display_name"), "method": c.get("method"),
         "arch": f"{c.get('arch')} w{c.get('width')}", "data": c.get("data_variant"),
         "measured_on": ((c.get("metrics") or {}).get("eval") or {}).get("data_variant"), "status": c.get("status"),
         **{k: (c.get("metrics") or {}).get(k) for k in ("clean", "n_clean", "pgd20", "n_pgd20", "autoattack",
                                                         "n_autoattack", "mca", "n_mca", "mauroc", "n_ood_in")},
         "train_time_s": (c.get("training") or {}).get("time_s"), "hardware": (c.get("training") or {}).get("hardware")}
        for c in cards]
df = pd.DataFrame(full)  # every field, for the exports
pct = st.column_config.NumberColumn(format="percent")
# few, short columns: the table fits the page without scrolling sideways (the CSV has every field)
st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch",
             column_config={"clean": pct, "pgd20": st.column_config.NumberColumn("PGD-20", format="percent"),
                            "autoattack": st.column_config.NumberColumn("AutoAttack", format="percent"),
                            "mca": st.column_config.NumberColumn("mCA", format="percent",
                                                                 help="mean accuracy over 15 corruptions x 5 "
                                                                      "severities (the card says N and variant)"),
                            "mauroc": st.column_config.NumberColumn("mAUROC", format="percent",
                                                                    help="OOD detection with the maximum softmax "
                                                                         "probability, mean AUROC over the "
                                                                         "card's outlier sets"),
                            "N": st.column_config.TextColumn("N", help="test images: clean / PGD-20 / AutoAttack")})
if any(r.get(k) is not None for r in rows for k in ("clean", "pgd20", "autoattack", "mca", "mauroc")):
    st.plotly_chart(charts.zoo_chart(rows), width="stretch", key="zoo_chart")
    st.caption("Light bars: clean accuracy; dark blue bars: accuracy under attack (a robust model loses less); "
               "green: mean accuracy under 15 common corruptions x 5 severities (mCA); orange: how well the "
               "maximum softmax probability tells test images from outliers (mAUROC; 50% is chance).")
else:
    st.info("No accuracies measured yet: `python -m backend.eval.evaluate --checkpoint checkpoints/<id> "
            "[--autoattack]` measures them and writes them into the card.")
c1, c2 = st.columns(2)
c1.download_button("Table (CSV)", df.to_csv(index=False), "robustlens_models.csv", "text/csv",
                   on_click="ignore", icon=":material/download:")
c2.download_button("Cards (JSON)", json.dumps(cards, indent=2, default=str), "robustlens_models.json",
                   "application/json", on_click="ignore", icon=":material/download:")

import_section()
