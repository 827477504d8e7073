"""Plotly figures for every page: one template, class colours from the dataset registry's palette
(app.widgets.imaging.class_colour), eps shown in k/255.

Each function takes plain data (lists / numpy arrays from the service) and returns a go.Figure;
nothing here talks to the backend or to Streamlit.
"""
from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from app.widgets.imaging import class_colour

TEMPLATE = "plotly_white"
MODEL_COLOURS = ("#2f5bd3", "#d1495b", "#2a9d8f", "#e9a23b", "#6c4ab6", "#577590", "#8d6e63", "#43aa8b")
# The states of an adversarial twin use no class colour (classes take the registry's palette, whose
# first ten are Tableau 10, red and grey among them): flipped = black cross, same prediction = dark grey open circle.
FLIP_COLOUR = "#111111"
SAME_COLOUR = "#5f6670"


def model_colour(i: int) -> str:
    return MODEL_COLOURS[i % len(MODEL_COLOURS)]


def _layout(fig: go.Figure, title: str = "", height: int = 360, **kw) -> go.Figure:
    fig.update_layout(template=TEMPLATE, title=title or None, height=height,
                      margin=dict(l=10, r=10, t=40 if title else 10, b=10), **kw)
    return fig


def accuracy_curves(curves: dict[str, dict], names: dict[str, str] | None = None) -> go.Figure:
    """Robust accuracy vs eps. curves: {label: {"eps": [..] (pixel units), "accuracy": [..] in [0,1],
    "model": model id (for the colour), "method": "pgd"|"fgsm"}}; FGSM lines are dashed."""
    fig = go.Figure()
    models = list(dict.fromkeys(c.get("model", k) for k, c in curves.items()))  # first-seen order
    for label, c in curves.items():
        m = c.get("model", label)
        eps_k = [round(e * 255, 2) for e in c["eps"]]
        fig.add_trace(go.Scatter(
            x=eps_k, y=c["accuracy"], mode="lines+markers", name=(names or {}).get(label, label),
            line=dict(color=model_colour(models.index(m)), dash="dash" if c.get("method") == "fgsm" else "solid"),
            hovertemplate="eps %{x}/255<br>accuracy %{y:.1%}<extra>%{fullData.name}</extra>"))
    fig.update_xaxes(title="eps (k/255, L-inf)")
    fig.update_yaxes(title="accuracy", range=[0, 1.02], tickformat=".0%")
    return _layout(fig, height=380, legend=dict(orientation="h", y=-0.25))


def flip_matrix(mat, classes: list[str], title: str = "") -> go.Figure:
    """Counts (C, C) ints: true class (rows) -> prediction under attack (columns)."""
    m = np.asarray(mat)
    fig = go.Figure(go.Heatmap(
        z=m, x=classes, y=classes, colorscale="Blues", showscale=False,
        text=m, texttemplate="%{text}", textfont=dict(size=10),
        hovertemplate="true %{y} -> predicted %{x}: %{z}<extra></extra>"))
    fig.update_xaxes(title="prediction under attack", tickangle=-45)
    fig.update_yaxes(title="true class", autorange="reversed")
    return _layout(fig, title=title, height=420)


def per_class(rows: dict[str, dict], classes: list[str]) -> go.Figure:
    """Per-class accuracy bars. rows: {model label: {"clean": (C,), "robust": (C,)}}; clean bars
    are light, robust bars solid, one colour per model."""
    fig = go.Figure()
    for i, (label, r) in enumerate(rows.items()):
        col = model_colour(i)
        fig.add_trace(go.Bar(x=classes, y=list(np.asarray(r["clean"], dtype=float)), name=f"{label} clean",
                             marker=dict(color=col, opacity=0.35)))
        fig.add_trace(go.Bar(x=classes, y=list(np.asarray(r["robust"], dtype=float)), name=f"{label} robust",
                             marker=dict(color=col)))
    fig.update_yaxes(title="accuracy", range=[0, 1.02], tickformat=".0%")
    return _layout(fig, height=380, barmode="group", legend=dict(orientation="h", y=-0.3))


def embedding_map(res: dict, classes: list[str], title: str = "", show_arrows: bool = True,
                  box_select: bool = False, dataset: str | None = None) -> go.Figure:
    """One model's map. res: Service.embed output (coords_clean (n,2), coords_adv (n,2)|None,
    labels/pred_clean/pred_adv (n,), image_ids). Clean points coloured by true class (one legend
    entry per class); each adversarial twin sits at the end of a grey segment: a black cross when the
    attack flipped the prediction, a grey open circle when it did not (colours no class uses).
    customdata = row index (for selections). dataset: whose class colours to use (else a palette
    sized to len(classes))."""
    cc = np.asarray(res["coords_clean"], dtype=float)
    lab = np.asarray(res["labels"]).astype(int)
    pc = np.asarray(res["pred_clean"]).astype(int)
    ids = list(res["image_ids"])
    adv = res.get("coords_adv")
    pa = np.asarray(res["pred_adv"]).astype(int) if res.get("pred_adv") is not None else None
    fig = go.Figure()
    if adv is not None and show_arrows:
        ca = np.asarray(adv, dtype=float)
        seg = np.full((len(cc) * 3, 2), np.nan)  # x0, x1, gap per point: one trace for all segments
        seg[0::3], seg[1::3] = cc, ca
        fig.add_trace(go.Scatter(x=seg[:, 0], y=seg[:, 1], mode="lines", hoverinfo="skip",
                                 line=dict(color="rgba(110,110,110,0.35)", width=1), name="clean -> adv",
                                 showlegend=True))
    name = lambda i: classes[i] if 0 <= i < len(classes) else str(i)  # noqa: E731
    for k in range(len(classes)):
        sel = np.flatnonzero(lab == k)
        if not len(sel):
            continue
        hover = [f"{ids[i]}<br>true {name(lab[i])}<br>clean pred {name(pc[i])}"
                 + (f"<br>adv pred {name(pa[i])}" if pa is not None else "") for i in sel]
        fig.add_trace(go.Scatter(
            x=cc[sel, 0], y=cc[sel, 1], mode="markers", name=classes[k], customdata=sel, text=hover,
            hovertemplate="%{text}<extra>clean</extra>",
            marker=dict(color=class_colour(k, len(classes), dataset), size=6, line=dict(width=0.5, color="white"))))
    if adv is not None and pa is not None:
        ca = np.asarray(adv, dtype=float)
        flip = pa != pc
        for flag, nm, col, size, symbol in ((False, "twin same", SAME_COLOUR, 6, "circle-open"),
                                            (True, "twin flip", FLIP_COLOUR, 8, "x")):
            sel = np.flatnonzero(flip == flag)
            if not len(sel):
                continue
            hover = [f"{ids[i]}<br>true {name(lab[i])}<br>clean pred {name(pc[i])}<br>adv pred {name(pa[i])}"
                     for i in sel]
            fig.add_trace(go.Scatter(x=ca[sel, 0], y=ca[sel, 1], mode="markers", name=nm, customdata=sel,
                                     text=hover, hovertemplate="%{text}<extra>adversarial</extra>",
                                     marker=dict(symbol=symbol, color=col, size=size,
                                                 line=dict(width=1.2, color=col))))
    fig.update_xaxes(showticklabels=False, title=None)
    # no equal-aspect lock: UMAP axes carry no units, and the map should use the column's width
    fig.update_yaxes(showticklabels=False, title=None)
    # box_select: dragmode "select", so dragging draws a selection box at once (no tool to pick
    # first). Streamlit then selects nothing on a click, so it is the user's choice: without it a
    # drag pans and a click on a point selects it (and opens it in the attack lab).
    return _layout(fig, title=title, height=520, **({"dragmode": "select"} if box_select else {}),
                   legend=dict(orientation="h", y=-0.02, yanchor="top", font=dict(size=10),
                               entrywidth=0.33, entrywidthmode="fraction",  # three per row, however narrow
                               title=dict(text="true class / twin", font=dict(size=10), side="top")))


def auc_curves(curves: dict[str, tuple], title: str = "") -> go.Figure:
    """Deletion (solid) and insertion (dashed) curves: target probability vs fraction of pixels
    removed / inserted, one colour per saliency method. curves: {method label: (deletion (S+1,),
    insertion (S+1,))}. A good map falls fast under deletion and rises fast under insertion."""
    fig = go.Figure()
    for i, (label, (dele, ins)) in enumerate(curves.items()):
        col = model_colour(i)
        for ys, kind, dash in ((dele, "deletion", "solid"), (ins, "insertion", "dash")):
            y = np.asarray(ys, dtype=float)
            fig.add_trace(go.Scatter(x=np.linspace(0, 1, len(y)), y=y, mode="lines", name=f"{label} {kind}",
                                     line=dict(color=col, dash=dash), legendgroup=label,
                                     hovertemplate="%{x:.0%} of pixels: p=%{y:.3f}<extra>%{fullData.name}</extra>"))
    fig.update_xaxes(title="fraction of pixels (most salient first)", tickformat=".0%")
    fig.update_yaxes(title="target probability", range=[0, 1.02])
    return _layout(fig, title=title, height=320, legend=dict(font=dict(size=10)))


def sanity_curve(stages: list[str], similarity: list[float], overlap: list[float] | None = None,
                 title: str = "") -> go.Figure:
    """Similarity between the original map and the map after randomising the model cumulatively
    from the top (one point per stage). Falling towards 0 is what a faithful method does."""
    fig = go.Figure(go.Scatter(x=stages, y=similarity, mode="lines+markers", name="Spearman",
                               line=dict(color="#2f5bd3")))
    if overlap is not None:
        fig.add_trace(go.Scatter(x=stages, y=overlap, mode="lines+markers", name="top-10% overlap",
                                 line=dict(color="#e9a23b")))
    fig.update_yaxes(title="similarity to the original map", range=[-1, 1.02])
    fig.update_xaxes(title="randomised up to")
    return _layout(fig, title=title, height=300, legend=dict(orientation="h", y=-0.35))


def training_curves(points: list[dict]) -> go.Figure:
    """Live training curves from progress/epoch events: loss; clean and robust validation accuracy;
    images/s. points: [{"step" or "epoch", "loss"?, "val_clean"?, "val_robust"?, "images_per_s"?}]."""
    fig = make_subplots(rows=1, cols=3, subplot_titles=("loss", "validation accuracy", "images / s"))

    def series(key):
        xs = [p["x"] for p in points if p.get(key) is not None]
        ys = [p[key] for p in points if p.get(key) is not None]
        return xs, ys

    for key, nm, col, c in (("loss", "loss", "#2f5bd3", 1), ("val_clean", "clean", "#2a9d8f", 2),
                            ("val_robust", "robust (PGD)", "#d1495b", 2), ("ips", "images/s", "#6c4ab6", 3)):
        xs, ys = series(key)
        if xs:
            fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines+markers", name=nm, line=dict(color=col),
                                     marker=dict(size=4)), row=1, col=c)
    if not any(p.get("val_clean") is not None or p.get("val_robust") is not None for p in points):
        fig.add_annotation(text="validated at the end of<br>each epoch: none yet", xref="x2 domain",
                           yref="y2 domain", x=0.5, y=0.5, showarrow=False, font=dict(color="#666"))
    fig.update_yaxes(range=[0, 1.02], tickformat=".0%", row=1, col=2)
    fig.update_xaxes(title="epoch")
    return _layout(fig, height=300, legend=dict(orientation="h", y=-0.3))


def zoo_chart(rows: list[dict]) -> go.Figure:
    """Grouped bars per model: clean, PGD-20 and AutoAttack accuracy (missing numbers are skipped).
    rows: [{"model": label, "clean": float|None, "pgd20": ..., "autoattack": ...}]."""
    fig = go.Figure()
    for key, nm, col in (("clean", "clean", "#9fb4e8"), ("pgd20", "PGD-20", "#2f5bd3"),
                         ("autoattack", "AutoAttack", "#1d2f6f")):
        xs = [r["model"] for r in rows if r.get(key) is not None]
        ys = [r[key] for r in rows if r.get(key) is not None]
        if xs:
            fig.add_trace(go.Bar(x=xs, y=ys, name=nm, marker=dict(color=col), text=[f"{y:.1%}" for y in ys],
                                 textposition="outside"))
    fig.update_yaxes(title="accuracy", range=[0, 1.1], tickformat=".0%")
    return _layout(fig, height=380, barmode="group", legend=dict(orientation="h", y=-0.25))
