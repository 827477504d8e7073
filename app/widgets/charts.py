"""Charts for every page: Plotly figures with one template, class colours from the dataset registry's
palette (app.widgets.imaging.class_colour), eps shown in k/255; the embedding map is a Vega-Lite chart
(Altair), because its hover tooltip shows the image's thumbnail and a Plotly hover label cannot hold a
picture.

Each function takes plain data (lists / numpy arrays from the service) and returns a go.Figure (or an
Altair chart); nothing here talks to the backend or to Streamlit.
"""
from __future__ import annotations

import textwrap

import altair as alt
import numpy as np
import pandas as pd
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


def tint(hex_colour: str, amount: float) -> str:
    """#rrggbb mixed with white: amount 1 keeps the colour, 0 gives white."""
    rgb = [int(hex_colour[i:i + 2], 16) for i in (1, 3, 5)]
    return "#" + "".join(f"{round(255 - amount * (255 - c)):02x}" for c in rgb)


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


def wrap_title(text: str, width: int = 32) -> list[str]:
    """A chart title as lines of at most `width` characters (words kept whole): a plotly title does not
    wrap by itself, and a model's name ("PGD-AT FastNet w64 (15 ep)") is wider than half of a laptop's page."""
    return textwrap.wrap(text, width) or [""]


def flip_matrix(mat, classes: list[str], title: str = "", title_lines: int = 0) -> go.Figure:
    """Counts (C, C) ints: true class (rows) -> prediction under attack (columns). The title is wrapped
    (wrap_title); title_lines reserves room for that many lines, so matrices side by side whose titles
    wrap differently still line up (pass the most lines among them)."""
    m = np.asarray(mat)
    fig = go.Figure(go.Heatmap(
        z=m, x=classes, y=classes, colorscale="Blues", showscale=False,
        text=m, texttemplate="%{text}", textfont=dict(size=10),
        hovertemplate="true %{y} -> predicted %{x}: %{z}<extra></extra>"))
    fig.update_xaxes(title="under attack", tickangle=-45)
    fig.update_yaxes(title="true class", autorange="reversed")
    lines = wrap_title(title) if title else []
    n = max(len(lines), title_lines)
    fig = _layout(fig, height=400 + 18 * n)
    if lines:
        fig.update_layout(title=dict(text="<br>".join(lines), font=dict(size=14), y=1, yanchor="top",
                                     yref="container", pad=dict(t=8)),
                          margin=dict(t=14 + 18 * n))
    return fig


def held_matrix(marks: list[tuple[str, list[str]]], corruptions: list[str]) -> go.Figure:
    """Which corrupted images keep the clean prediction. marks: per model (label, one string per corruption,
    a mark per severity 1..5: "o" = the prediction is the clean image's, "x" = it changed). Rows are the
    corruptions, columns the models (names wrapped, so five long names fit a laptop's page); a cell's colour
    counts the severities held (red: none, yellow: some, green: all) and its text is the marks."""
    labels = [label for label, _ in marks]
    z = [[m[i].count("o") for _, m in marks] for i in range(len(corruptions))]
    text = [[m[i] for _, m in marks] for i in range(len(corruptions))]
    cols = list(range(len(labels)))  # by position: two models may share a name
    fig = go.Figure(go.Heatmap(
        z=z, x=cols, y=corruptions, text=text, texttemplate="%{text}",
        textfont=dict(family="monospace", size=12, color="#222222"),
        customdata=[[labels[c] for c in cols] for _ in corruptions], zmin=0, zmax=5,
        colorscale=[[0, "#f4c7c3"], [0.5, "#fdf1c7"], [1, "#c8e6c9"]],  # changed at every severity .. held at all
        showscale=False, xgap=2, ygap=2,
        hovertemplate="%{y} on %{customdata}: held at %{z} of 5 severities (%{text})<extra></extra>"))
    fig.update_xaxes(side="top", tickmode="array", tickvals=cols, showgrid=False, tickangle=0,
                     ticktext=["<br>".join(wrap_title(m, 12)) for m in labels])
    fig.update_yaxes(autorange="reversed", showgrid=False)
    head = 18 * max([len(wrap_title(m, 12)) for m in labels] + [1])
    fig = _layout(fig, height=26 * len(corruptions) + head + 30)
    fig.update_layout(margin=dict(t=head + 14))
    return fig


def per_class(rows: dict[str, dict], classes: list[str]) -> go.Figure:
    """Per-class accuracy bars. rows: {model label: {"clean": (C,), "robust": (C,)}}; clean bars
    are light, robust bars solid, one colour per model."""
    fig = go.Figure()
    for i, (label, r) in enumerate(rows.items()):
        col = model_colour(i)
        # a lighter tint (not opacity, which the legend's swatch does not show) and a hatch for clean
        fig.add_trace(go.Bar(x=classes, y=list(np.asarray(r["clean"], dtype=float)), name=f"{label} clean",
                             marker=dict(color=tint(col, 0.4), pattern=dict(shape="/", fgcolor=col, size=6))))
        fig.add_trace(go.Bar(x=classes, y=list(np.asarray(r["robust"], dtype=float)), name=f"{label} robust",
                             marker=dict(color=col)))
    fig.update_yaxes(title="accuracy", range=[0, 1.02], tickformat=".0%")
    return _layout(fig, height=380, barmode="group", legend=dict(orientation="h", y=-0.3))


# Twin markers: an "x" drawn as two strokes (a path in the symbol's unit square) and an open circle.
TWIN_SHAPES = {"twin flip": "M-1,-1L1,1M1,-1L-1,1", "twin same": "circle"}
# the names of the embedding map's selections (what Streamlit reports them by): a clicked clean point, a
# clicked twin, a box
PICK, PICK_TWIN, BOX = "pick", "pick_twin", "box"


def embedding_map(res: dict, classes: list[str], title: str = "", show_arrows: bool = True,
                  box_select: bool = False, dataset: str | None = None,
                  thumbnails: list[str] | None = None) -> alt.LayerChart:
    """One model's map as a Vega-Lite chart (st.altair_chart), whose hover tooltip can show a picture.
    res: Service.embed output (coords_clean (n,2), coords_adv (n,2)|None, labels/pred_clean/pred_adv
    (n,), image_ids). Clean points coloured by true class (the data set's palette, one legend entry per
    class present); each adversarial twin sits at the end of a grey segment: a black x when the attack
    flipped the prediction, a grey open circle when it did not (colours no class uses; their own
    legend). thumbnails: n image URLs ("data:image/png;base64,...") shown in the tooltip of the image's
    clean point and of its twin, above the image id, true class and both predictions.

    One data row per image ("row" = its index in res, x/y, x_adv/y_adv), drawn by every layer, so a
    thumbnail travels once. Selections (read them with embedding_selection): box_select=False: the
    point selections PICK (a click on a clean point) and PICK_TWIN (on a twin), each of the row's index;
    a drag pans, the wheel zooms; box_select=True: the interval selection BOX on x/y (a drag draws a
    box at once; rows_in_box finds the images inside it)."""
    cc = np.asarray(res["coords_clean"], dtype=float)
    n = len(cc)
    lab = np.asarray(res["labels"]).astype(int)
    pc = np.asarray(res["pred_clean"]).astype(int)
    adv = res.get("coords_adv")
    pa = np.asarray(res["pred_adv"]).astype(int) if res.get("pred_adv") is not None else None
    name = lambda i: classes[i] if 0 <= i < len(classes) else str(i)  # noqa: E731
    df = pd.DataFrame({"row": np.arange(n), "x": cc[:, 0], "y": cc[:, 1], "image id": list(res["image_ids"]),
                       "true class": [name(i) for i in lab], "clean pred": [name(i) for i in pc]})
    tips = ["image id", "true class", "clean pred"]
    if thumbnails is not None:
        if len(thumbnails) != n:
            raise ValueError(f"need {n} thumbnails, got {len(thumbnails)}")
        df.insert(0, "image", list(thumbnails))  # vega-tooltip shows a field named "image" as a picture
        tips = ["image", *tips]
    twins = adv is not None and pa is not None
    if twins:
        ca = np.asarray(adv, dtype=float)
        df["x_adv"], df["y_adv"] = ca[:, 0], ca[:, 1]
        df["adv pred"] = [name(i) for i in pa]
        df["twin"] = np.where(pa != pc, "twin flip", "twin same")
        tips.append("adv pred")
    # the classes present, in label order, with the data set's colours
    present = sorted(set(lab.tolist()))
    colour = alt.Color("true class:N", title="true class",
                       scale=alt.Scale(domain=[name(k) for k in present],
                                       range=[class_colour(k, len(classes), dataset) for k in present]),
                       legend=alt.Legend(orient="bottom", columns=3, symbolLimit=30, labelLimit=110,
                                         titleFontSize=10, labelFontSize=10))
    sel = (alt.selection_interval(name=BOX, encodings=["x", "y"]) if box_select
           else alt.selection_point(name=PICK, fields=["row"], on="click", clear="dblclick"))
    seen = alt.condition(sel, alt.value(1.0), alt.value(0.25))  # the selection stays opaque (all, when none)
    # UMAP axes carry no units: no labels, ticks or titles, and no equal-aspect lock (the map takes the
    # column's width); the grid stays, for the eye
    axis = alt.Axis(labels=False, ticks=False, domain=False, title=None)
    scale = alt.Scale(zero=False, nice=False, padding=10)  # padding (px): no point sits on the frame
    x, y = alt.X("x:Q", axis=axis, scale=scale), alt.Y("y:Q", axis=axis, scale=scale)
    tooltip = [alt.Tooltip(f"{t}:N", title=t) for t in tips] + [alt.Tooltip("point:N", title="point")]
    base = alt.Chart(df)
    layers = []
    if twins and show_arrows:
        layers.append(base.mark_rule(color="#6e6e6e", opacity=0.35, strokeWidth=1).encode(
            x=x, y=y, x2="x_adv:Q", y2="y_adv:Q"))
    layers.append(base.mark_circle(size=42, opacity=1.0, stroke="white", strokeWidth=0.5).transform_calculate(
        point="'clean'").encode(x=x, y=y, color=colour, opacity=seen, tooltip=tooltip).properties(
        name="clean").add_params(sel))
    if twins:
        # above the map, in one line: beside the class legend it would be cut off in a narrow column
        twin_legend = alt.Legend(orient="top", direction="horizontal", titleOrient="left", titleFontSize=10,
                                 labelFontSize=10)
        what = "datum.twin == 'twin flip' ? 'adversarial twin, flipped' : 'adversarial twin, same prediction'"
        layers.append(base.mark_point(filled=False, size=44, strokeWidth=1.3).transform_calculate(point=what).encode(
            x=alt.X("x_adv:Q", axis=axis, scale=scale), y=alt.Y("y_adv:Q", axis=axis, scale=scale), opacity=seen,
            shape=alt.Shape("twin:N", title="adversarial twin",
                            scale=alt.Scale(domain=list(TWIN_SHAPES), range=list(TWIN_SHAPES.values())),
                            legend=twin_legend),
            stroke=alt.Stroke("twin:N", title="adversarial twin",  # same field and title: one legend
                              scale=alt.Scale(domain=list(TWIN_SHAPES), range=[FLIP_COLOUR, SAME_COLOUR]),
                              legend=twin_legend),
            tooltip=tooltip).properties(name="twins"))
        if not box_select:  # a click on a twin picks its row too: a selection of its own (one param on two
            # layers draws nothing in Streamlit 1.67's Vega-Lite)
            layers[-1] = layers[-1].add_params(alt.selection_point(name=PICK_TWIN, fields=["row"], on="click"))
    # Streamlit fits the whole chart, title and legends included, into this height (as Plotly's 520 did)
    chart = alt.layer(*layers).properties(height=520, title=alt.TitleParams(title, anchor="start") if title else "")
    chart = chart.resolve_scale(color="independent", shape="independent", stroke="independent")
    if not box_select:
        chart = chart.interactive()  # a drag pans, the wheel zooms (box mode: a drag draws the box)
    return chart.configure_view(strokeWidth=0)


def embedding_selection_modes(res: dict, box_select: bool) -> list[str]:
    """The selection names to pass st.altair_chart(selection_mode=...) for embedding_map's chart."""
    if box_select:
        return [BOX]
    return [PICK, PICK_TWIN] if res.get("coords_adv") is not None and res.get("pred_adv") is not None else [PICK]


def embedding_selection(state, box_select: bool, res: dict) -> list[int]:
    """The rows of res (image indices) an st.altair_chart selection state holds: the picked rows, or
    the images whose clean point or twin lies inside the box (rows_in_box)."""
    sel = getattr(state, "selection", None) or {}
    if box_select:
        box = sel.get(BOX) or {}
        return rows_in_box(res, box.get("x"), box.get("y")) if box else []
    picked = [*(sel.get(PICK) or []), *(sel.get(PICK_TWIN) or [])]
    return list(dict.fromkeys(int(p["row"]) for p in picked if p.get("row") is not None))


def rows_in_box(res: dict, xs, ys) -> list[int]:
    """Indices of the images whose clean point or adversarial twin lies in the box xs x ys (either
    end first; None or an empty range: nothing)."""
    if not xs or not ys or len(xs) != 2 or len(ys) != 2:
        return []
    (x0, x1), (y0, y1) = sorted(map(float, xs)), sorted(map(float, ys))

    def inside(c) -> np.ndarray:
        c = np.asarray(c, dtype=float)
        return (c[:, 0] >= x0) & (c[:, 0] <= x1) & (c[:, 1] >= y0) & (c[:, 1] <= y1)

    hit = inside(res["coords_clean"])
    if res.get("coords_adv") is not None:
        hit |= inside(res["coords_adv"])
    return [int(i) for i in np.flatnonzero(hit)]


def auc_curves(curves: dict[str, tuple], title: str = "") -> go.Figure:
    """Deletion (solid) and insertion (dashed) curves: the probability of the class the model predicts on the
    clean image (the maps' target) vs fraction of pixels
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
    fig.update_yaxes(title="p(class predicted on the clean image)", range=[0, 1.02])
    return _layout(fig, title=title, height=320, legend=dict(font=dict(size=10)))


def lens_paths(paths: dict[str, list[float]], target: str, title: str = "") -> go.Figure:
    """The Feature lens's target probability after each PGD step, one line per model. paths: {model
    display name: p after 0..steps steps (step 0: the clean image)}."""
    fig = go.Figure()
    for i, (name, ys) in enumerate(paths.items()):
        y = np.asarray(ys, dtype=float)
        fig.add_trace(go.Scatter(x=np.arange(len(y)), y=y, mode="lines", name=name,
                                 line=dict(color=model_colour(i)),
                                 hovertemplate="step %{x}: p=%{y:.3f}<extra>%{fullData.name}</extra>"))
    fig.update_xaxes(title="PGD step (0: the clean image)")
    fig.update_yaxes(title=f"p({target})", range=[0, 1.02])
    # the legend under the plot: beside it, five model names took a third of a laptop page's width
    return _layout(fig, title=title, height=380, legend=dict(orientation="h", y=-0.25, font=dict(size=10)))


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
        # in paper coordinates at the middle panel's centre: an axis-domain reference to a panel without
        # traces was drawn in the first panel
        lo, hi = fig.layout.xaxis2.domain
        fig.add_annotation(text="validation runs at the end<br>of each epoch: none yet", xref="paper",
                           yref="paper", x=(lo + hi) / 2, y=0.5, showarrow=False, font=dict(color="#666"))
    fig.update_yaxes(range=[0, 1.02], tickformat=".0%", row=1, col=2)
    fig.update_xaxes(title="epoch")
    fig = _layout(fig, height=300, legend=dict(orientation="h", y=-0.3))
    fig.update_layout(margin=dict(t=34))  # room for the panel titles above the plots
    return fig


def severity_curves(curves: dict[str, dict], names: dict[str, str] | None = None,
                    labels: dict[str, str] | None = None, per_row: int = 5) -> go.Figure:
    """Accuracy against corruption severity, one small panel per corruption, a line per model.
    curves: {model id: {"corruptions": [K names], "severities": [0, 1..5], "accuracy": {name: [acc
    per severity] in [0,1]}}} (severity 0 is clean accuracy); names: model display names; labels:
    corruption labels."""
    first = next(iter(curves.values()))
    corr = list(first["corruptions"])
    rows = -(-len(corr) // per_row)
    fig = make_subplots(rows=rows, cols=min(per_row, len(corr)), shared_yaxes=True, shared_xaxes=True,
                        subplot_titles=[(labels or {}).get(c, c) for c in corr],
                        vertical_spacing=0.12 if rows > 1 else 0.2, horizontal_spacing=0.02)
    for k, (m, c) in enumerate(curves.items()):
        for i, name in enumerate(corr):
            fig.add_trace(go.Scatter(
                x=c["severities"], y=c["accuracy"][name], mode="lines+markers", name=(names or {}).get(m, m),
                legendgroup=m, showlegend=i == 0, line=dict(color=model_colour(k)), marker=dict(size=5),
                hovertemplate=f"{(labels or {}).get(name, name)}, severity %{{x}}<br>accuracy %{{y:.1%}}"
                              "<extra>%{fullData.name}</extra>"),
                row=i // per_row + 1, col=i % per_row + 1)
    fig.update_yaxes(range=[0, 1.02], tickformat=".0%")
    fig.update_xaxes(tickvals=first["severities"])
    fig.update_annotations(font_size=12)
    return _layout(fig, height=170 * rows + 120, legend=dict(orientation="h", y=-0.08))


def zoo_chart(rows: list[dict]) -> go.Figure:
    """Grouped bars per model: clean, PGD-20, AutoAttack accuracy, mean corruption accuracy (mCA) and
    OOD detection (mAUROC, MSP); missing numbers are skipped. rows: [{"model": label, "clean":
    float|None, "pgd20": ..., "autoattack": ..., "mca": ..., "mauroc": ...}]."""
    fig = go.Figure()
    for key, nm, col in (("clean", "clean", "#9fb4e8"), ("pgd20", "PGD-20", "#2f5bd3"),
                         ("autoattack", "AutoAttack", "#1d2f6f"), ("mca", "mCA (corruptions)", "#2a9d8f"),
                         ("mauroc", "mAUROC (OOD, MSP)", "#e9a23b")):
        xs = [r["model"] for r in rows if r.get(key) is not None]
        ys = [r[key] for r in rows if r.get(key) is not None]
        if xs:
            fig.add_trace(go.Bar(x=xs, y=ys, name=nm, marker=dict(color=col), text=[f"{y:.1%}" for y in ys],
                                 textposition="outside"))
    fig.update_yaxes(title="accuracy; AUROC", range=[0, 1.1], tickformat=".0%")
    return _layout(fig, height=380, barmode="group", legend=dict(orientation="h", y=-0.25))
