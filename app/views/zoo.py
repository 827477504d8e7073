"""Model zoo: a card per model (method, architecture, data, status, measured accuracy with N, training
cost), then one comparison table and chart, with CSV / JSON export."""
from __future__ import annotations

import json

import pandas as pd
import streamlit as st

from app import charts, state
from app.client import models
from app.components import no_models_notice

st.title("Model zoo")
st.caption("Every installed model with what was measured on it. Accuracies are fractions of N test images; "
           "PGD-20 is L-inf eps 8/255 unless the card says otherwise; AutoAttack is the strongest check.")

cards = models()
state.sync_url({})
if not cards:
    no_models_notice()
    st.stop()


def _pct(card: dict, key: str) -> str:
    m = card.get("metrics") or {}
    v = m.get(key)
    if v is None:
        return "not measured"
    n = m.get(f"n_{key}")
    return f"{float(v):.1%}" + (f" (N={int(n)})" if n else "")


def _hours(card: dict) -> str:
    t = (card.get("training") or {}).get("time_s")
    if t is None:
        return "?"
    t = float(t)
    return f"{t / 3600:.1f} h" if t >= 3600 else f"{t / 60:.1f} min" if t >= 60 else f"{t:.0f} s"


def _status_badge(status: str) -> str:
    colour = {"shipped": "green", "cpu-preview": "orange", "experimental": "violet", "test": "gray"}
    return f":{colour.get(status, 'blue')}-badge[{status}]"


cols = st.columns(3)
for i, c in enumerate(cards):
    with cols[i % 3].container(border=True):
        st.markdown(f"**{c.get('display_name') or c['id']}**  \n`{c['id']}`")
        st.markdown(f"{_status_badge(str(c.get('status', '?')))} :blue-badge[{c.get('method', '?')}] "
                    f":gray-badge[{c.get('arch', '?')} w{c.get('width', '?')}]")
        tr = c.get("training") or {}
        st.markdown(
            f"- data: {c.get('dataset', '?')} / {c.get('data_variant', '?')}\n"
            f"- clean: {_pct(c, 'clean')}\n- PGD-20: {_pct(c, 'pgd20')}\n- AutoAttack: {_pct(c, 'autoattack')}\n"
            f"- trained: {_hours(c)} on {tr.get('hardware', '?')}"
            + (f", {tr['epochs']} epochs" if tr.get("epochs") is not None else ""))
        if c.get("notes"):
            st.caption(c["notes"])

st.subheader("Comparison")
rows = []
for c in cards:
    m, tr = c.get("metrics") or {}, c.get("training") or {}
    rows.append({"model": c["id"], "name": c.get("display_name"), "method": c.get("method"),
                 "arch": f"{c.get('arch')} w{c.get('width')}", "data": c.get("data_variant"),
                 "status": c.get("status"), "clean": m.get("clean"), "n_clean": m.get("n_clean"),
                 "pgd20": m.get("pgd20"), "n_pgd20": m.get("n_pgd20"), "autoattack": m.get("autoattack"),
                 "n_autoattack": m.get("n_autoattack"), "train_time_s": tr.get("time_s"),
                 "hardware": tr.get("hardware")})
df = pd.DataFrame(rows)
pct = st.column_config.NumberColumn(format="percent")
st.dataframe(df, hide_index=True, width="stretch",
             column_config={"clean": pct, "pgd20": pct, "autoattack": pct})
if any(r.get(k) is not None for r in rows for k in ("clean", "pgd20", "autoattack")):
    st.plotly_chart(charts.zoo_chart(rows), width="stretch", key="zoo_chart")
    st.caption("Light bars: clean accuracy; dark bars: accuracy under attack. A robust model loses less.")
else:
    st.info("No accuracies measured yet: `python -m backend.evaluate --checkpoint checkpoints/<id> "
            "[--autoattack]` measures them and writes them into the card.")
c1, c2 = st.columns(2)
c1.download_button("Table (CSV)", df.to_csv(index=False), "robustlens_models.csv", "text/csv",
                   on_click="ignore", icon=":material/download:")
c2.download_button("Cards (JSON)", json.dumps(cards, indent=2, default=str), "robustlens_models.json",
                   "application/json", on_click="ignore", icon=":material/download:")
