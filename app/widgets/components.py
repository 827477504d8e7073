"""Reusable Streamlit pieces: probability bars, image panels, the image picker, the model picker.

Images are drawn with `st.image` as PNGs of nearest-neighbour upscaled pictures, encoded once per
picture for every session (app.widgets.imaging.display_png); bars are
small HTML blocks so their numbers are real text (readable, selectable, testable in a browser).
"""
from __future__ import annotations

import html
import random

import streamlit as st

from app.session import home, honesty, state
from app.session.client import (
    all_models,
    backend,
    backend_key,
    classes,
    current_dataset,
    get_client,
    get_image,
    models,
    zoo_datasets,
)
from app.widgets.imaging import DISPLAY_PX, INFERNO_CSS, THUMB_PX, class_colour, display_png

SOURCE_LABELS = {"samples": "Sample images", "test": "{label} test set", "train": "{label} train set",
                 "upload": "Upload an image"}
BROWSE_PAGE = home.BROWSE  # thumbnails per browser page (the home view prewarms the first)
_SOURCE_NOUNS = {"test": "test", "samples": "sample", "train": "training"}


NO_SALIENCY = "none"  # the saliency menus' "off" entry


def quick_saliency(sal_lim: dict) -> tuple[dict[str, str], str]:
    """({method: label}, default method) for the pages that draw a map per model and image: the backend's
    quick saliency methods (limits()["saliency"]; the slow ones are on the Saliency studio page), then
    NO_SALIENCY; the default is the backend's own default if it is quick, else NO_SALIENCY."""
    out = {m: sal_lim["info"][m]["label"] for m in sal_lim.get("methods", []) if not sal_lim["info"][m]["slow"]}
    out[NO_SALIENCY] = "off (faster)"
    default = sal_lim.get("default")
    return out, default if default in out else NO_SALIENCY


def source_noun(source: str) -> str:
    """An image source as a noun's modifier: "20 sample images" (not "20 samples images")."""
    return _SOURCE_NOUNS.get(source, source)
_DS_SIDE = "_dataset_image_side"  # session key: the chosen data set's image side (set by dataset_picker)


def prob_bars(top: list[dict], true_label: int | None = None, target: int | None = None,
              where=None) -> None:
    """Top-k probability bars as HTML. top: [{"index","class_name","prob"}] best first. The true
    class is marked with a check, the attack's target class with a bullseye."""
    rows = []
    for t in top:
        idx, p = int(t["index"]), float(t["prob"])
        mark = " &#10003;" if true_label is not None and idx == true_label else ""
        mark += " &#9678;" if target is not None and idx == target else ""
        rows.append(
            f'<div style="display:flex;align-items:center;gap:4px;font-size:0.8rem;line-height:1.35;min-width:0">'
            f'<span style="flex:0 1 88px;min-width:0;white-space:nowrap;overflow:hidden;text-overflow:ellipsis"'
            f' title="{html.escape(str(t["class_name"]))}">{html.escape(str(t["class_name"]))}'
            f'{mark}</span><span style="flex:1 1 20px;min-width:12px;background:#e8ebf1;height:10px;'
            f'border-radius:3px"><span style="display:block;height:10px;border-radius:3px;'
            f'width:{max(p, 0.0) * 100:.1f}%;background:{class_colour(idx)}"></span></span>'
            f'<span style="flex:0 0 auto;text-align:right" class="rl-prob">{p * 100:.1f}%</span></div>')
    (where or st).html(f'<div class="rl-bars">{"".join(rows)}</div>')


def display_side(image_side: int, px: int = DISPLAY_PX, dataset_side: int = 0) -> int:
    """The side an image is drawn at: px, but never below its own side nor the data set's image side."""
    return max(int(px), int(image_side), int(dataset_side))


def show_image(img, caption: str | None = None, px: int = DISPLAY_PX, where=None) -> None:
    """One picture, nearest-neighbour upscaled to px x px (never below its own size: a 224-px image
    stays 224, nor below the chosen data set's image size, so a 64-px model's maps beside a 224-px
    ImageNet image are drawn as large as it), drawn at that size but never wider than its column
    (width="content"), so a row of 8 models fits the page instead of overflowing it. Sent as a lossless
    PNG encoded once per picture for every session (imaging.display_png), not re-encoded per rerun."""
    side = display_side(int(getattr(img, "shape", (px,))[0]), px, int(st.session_state.get(_DS_SIDE, 0)))
    (where or st).image(display_png(img, side), caption=caption, width="content", output_format="PNG")


BADGE_COLOURS = {"red": ("#fde8e8", "#b42318"), "green": ("#e6f4ea", "#1e6b34"), "gray": ("#eef0f3", "#3d4451"),
                 "orange": ("#fff1e0", "#9a4b00"), "blue": ("#e6eefc", "#1f4bb8")}


def badge(text: str, colour: str = "gray", where=None) -> None:
    """A badge whose text wraps inside its column (st.badge cuts long text off with an ellipsis)."""
    bg, fg = BADGE_COLOURS.get(colour, BADGE_COLOURS["gray"])
    (where or st).html(f'<div class="rl-badge" style="display:inline-block;max-width:100%;white-space:normal;'
                       f'overflow-wrap:anywhere;background:{bg};color:{fg};border-radius:6px;padding:1px 7px;'
                       f'font-size:0.8rem;line-height:1.35">{html.escape(text)}</div>')


def colour_bar(lo: str, hi: str, title: str, where=None) -> None:
    """The saliency colour map as a bar with its scale: `lo` under the dark end, `hi` under the
    bright end, `title` above (what the numbers mean)."""
    (where or st).html(
        f'<div class="rl-colourbar" style="font-size:0.72rem;line-height:1.25;color:#3d4451;max-width:100%">'
        f'<div style="overflow-wrap:anywhere">{html.escape(title)}</div>'
        f'<div style="height:9px;border-radius:2px;background:linear-gradient(to right,{INFERNO_CSS})"></div>'
        f'<div style="display:flex;justify-content:space-between;gap:4px"><span>{html.escape(lo)}</span>'
        f'<span style="text-align:right">{html.escape(hi)}</span></div></div>')


def model_header(card: dict | None, model_id: str, where=None) -> None:
    """A model's name in bold, with its measured accuracy and status beneath (from the card)."""
    box = where or st
    name = (card or {}).get("display_name") or model_id
    box.markdown(f"**{name}**")
    box.caption(honesty.model_line(card or {"id": model_id}))


def no_models_notice() -> None:
    """What to do when no model is installed (the app still browses images)."""
    st.warning("No models are installed yet. Train a short one on the Train page (a few minutes on a "
               "CPU), or copy checkpoint folders (model.safetensors + card.json) into the checkpoints "
               "folder ($ROBUSTLENS_CHECKPOINTS, default `checkpoints/`).", icon=":material/info:")
    st.page_link("views/train.py", label="Go to the Train page", icon=":material/model_training:")


def page_setup(with_image: bool = False) -> tuple[dict | None, list[dict], dict[str, str]]:
    """(picked image or None, model cards, {model id: display name}) for a page. with_image shows the
    sidebar image picker first and stops the page until an image is picked; with no model installed
    the page shows the notice (and the picked image, which the app still browses) and stops."""
    if not with_image:
        dataset_picker()
    img = image_picker() if with_image else None
    cards = models()
    names = {c["id"]: c.get("display_name") or c["id"] for c in cards}
    if with_image and img is None:
        st.stop()
    if not cards:
        no_models_notice()
        if img is not None:
            show_image(img["pixels"], caption=img["image_id"])
        st.stop()
    return img, cards, names


@st.cache_data(show_spinner=False, max_entries=16, ttl=300)
def _registry(backend: str, key: str) -> dict:
    # one of the backend's registries (capabilities()[key]); it changes only when the backend restarts
    return dict(((get_client().capabilities() or {}).get(key)) or {})


def _cached_registry(key: str) -> dict:
    try:
        return _registry(backend_key(), key)
    except Exception:
        return {}


def known_datasets() -> dict:
    """{name: {"label", "classes", "image_size", ...}}: limits()["datasets"], cached per backend."""
    return _cached_registry("datasets")


def preview_text(cards: list[dict]) -> str:
    """'FastNet w64, 15 epochs': what the cpu-preview models among `cards` are (app.session.honesty)."""
    shorts = {n: d.get("short") or n for n, d in _cached_registry("architectures").items()}
    return honesty.preview_text(cards, shorts)


def dataset_info(name: str | None = None) -> dict:
    """limits()["datasets"][name] (default: the chosen data set): label, classes, image_size, ..."""
    name = name or current_dataset()
    return {"name": name, "label": name, "image_size": 32, **(known_datasets().get(name) or {})}


def input_side(cards: list[dict], ids: list[str]) -> int:
    """The largest input side (px) among the models `ids` (a card's input_size, else its data set's)."""
    return home.input_side(cards, ids, known_datasets())


def dataset_picker(where=None) -> str:
    """The data set every page shows (the "ds" param, in the URL of every page), chosen first in the
    sidebar: a select box of the registered data sets (limits()["datasets"]) that the zoo holds models
    for, drawn only when that is more than one. Returns the chosen data set."""
    cards = all_models()
    present = zoo_datasets(cards)
    if len(present) <= 1:
        chosen = current_dataset(cards)
        st.session_state[_DS_SIDE] = int(dataset_info(chosen)["image_size"])
        return chosen
    known = known_datasets()
    opts = [d for d in known if d in present] + [d for d in present if d not in known]
    counts = {d: sum(1 for c in cards if (c.get("dataset") or "cifar10") == d) for d in opts}
    box = where or st.sidebar
    with box:
        state.every_page("ds")
        # default: the first card's data set (rsupcon's), as current_dataset() and the prewarmed home page
        chosen = state.widget(st.selectbox, "Data set", "ds", present[0], options=opts,
                              format_func=lambda d: f'{(known.get(d) or {}).get("label", d)} ({counts[d]} models, '
                                                    f'{(known.get(d) or {}).get("image_size", "?")} px)',
                              help="Models are trained for one data set: choose it first. The model pickers "
                                   "list that data set's models and the image picker its images.")
    st.session_state[_DS_SIDE] = int(dataset_info(chosen)["image_size"])
    return chosen


def data_sources() -> tuple[list[str], dict[str, int]]:
    """The image sources a batch page can sample from (test, samples, train: those available) and
    their image counts; the offline samples when the service says nothing."""
    sources = backend(quiet=True).image_sources(dataset=current_dataset()) or {}
    opts = [s for s in ("test", "samples", "train") if (sources.get(s) or {}).get("available")] or ["samples"]
    return opts, {s: int((sources.get(s) or {}).get("count") or 20) for s in opts}


def model_picker(cards: list[dict], name: str = "models", label: str = "Models", where=None,
                 max_default: int | None = None) -> list[str]:
    """Multiselect of model ids (default: every model, rsupcon first); returns the chosen ids."""
    ids = [c["id"] for c in cards]
    # short chips (name, clean/robust %, status) so five or more fit on one line of a full-width picker;
    # beside imported models, each chip also says where the model comes from (ours / its source)
    mixed = any(c.get("method") == "imported" for c in cards)
    names = {c["id"]: honesty.picker_label(c) + (f" · {model_source(c)}" if mixed else "") for c in cards}
    default = ids[:max_default] if max_default else ids
    chosen = state.widget((where or st).multiselect, label, name, default, options=ids,
                          format_func=lambda m: names.get(m, m),
                          help="Each model: its name, clean / robust test accuracy (AutoAttack, else "
                               "PGD-20, from its card) and status. cpu-preview = a network trained on a CPU "
                               f"({preview_text(cards) or 'a few core-hours'}), not the paper's ResNet-18 "
                               "trained for 200 epochs on a GPU.")
    return [m for m in ids if m in (chosen or [])]  # keep the registry's order (rsupcon first)


def model_source(card: dict) -> str:
    """Where a model comes from: "ours" (trained here) or its import source (torchvision, robustbench, ...)."""
    if card.get("method") != "imported":
        return "ours"
    return str((card.get("provenance") or {}).get("source") or "imported")


def _pick(image_id: str) -> None:
    state.put("image", image_id)


def _sources() -> list[str]:
    src = backend(quiet=True).image_sources(dataset=current_dataset()) or {}
    out = [s for s in ("samples", "test", "train") if (src.get(s) or {}).get("available")]
    return out + ["upload"]


def image_picker(where=None) -> dict | None:
    """Choose an image (browse by class, random, the offline samples, or upload); returns the
    chosen image dict (see Service.get_image) or None. The choice is the "image" param."""
    box = where or st.sidebar
    dataset_picker()
    ds = dataset_info()
    with box:
        st.subheader("Image")
        sources = _sources()
        source = state.widget(st.radio, "Source", "src", sources[0], options=sources,
                              format_func=lambda s: SOURCE_LABELS.get(s, s).format(label=ds["label"]),
                              horizontal=False)
        if source == "upload":
            _upload_box(ds)
        else:
            _browse_box(source, ds["name"])
        image_id = state.get("image", None)
        img = get_image(image_id, quiet=True) if image_id else None
        stale = img is not None and img.get("dataset", "cifar10") != ds["name"]  # of the data set chosen before
        missing = image_id if image_id and img is None else None  # a link's image this server cannot show
        if stale or missing:
            img = None
            state.put("image", None)
        if img is None:
            first = default_image_id(sources[0] if sources[0] != "upload" else "samples")
            if first:
                img = get_image(first)
                if img is not None:
                    state.put("image", img["image_id"])
        if missing:  # said in the page itself, in the user's words: never a silent switch
            st.session_state["_missing_image"] = (missing, None if img is None else img["image_id"])
        if img is not None:
            cap = f'{img["image_id"]}' + (f' - {img["class_name"]}' if img.get("class_name") else "")
            show_image(img["pixels"], caption=cap)
        else:
            st.info(f"No image available: upload one, or provide {ds['label']} images (see the Model zoo page).")
    notice = st.session_state.get("_missing_image")
    if notice and img is not None and notice[1] == img["image_id"]:
        st.warning(missing_image_text(notice[0], notice[1], ds["label"]), icon=":material/image_not_supported:")
    return img


def missing_image_text(image_id: str, shown: str | None, label: str) -> str:
    """Why a link's image is not shown, in the user's words, and what is shown instead."""
    if ":" in image_id and image_id.split("/")[-1].split(":")[0] in ("test", "train"):
        split = image_id.split("/")[-1].split(":")[0]
        why = (f"it is from the {label} {split} set, which is not installed on this server (the offline "
               "sample images are; the Model zoo page says how to add the data set)")
    elif "upload:" in image_id:
        why = "uploads are kept only while the server runs, and this one has restarted since"
    else:
        why = "this server does not know that image id"
    instead = f" Showing **{shown}** instead." if shown else ""
    return f"The image in this link, **{image_id}**, cannot be opened here: {why}.{instead}"


def compared_models() -> list[str]:
    """The models the page compares: the "models" param (session or link), else every model."""
    ids = [c["id"] for c in models()]
    raw = st.session_state.get("p_models")
    if raw is None and "models" in st.query_params:
        raw = [v for v in st.query_params.get("models", "").split(",") if v]
    chosen = [m for m in ids if m in (raw or [])]
    return chosen or ids


def default_image_id(source: str = "samples") -> str | None:
    """The first image of `source` by app.session.home's rule (every compared model right when
    clean), computed once per session and model choice."""
    ids = compared_models()
    ds = current_dataset()
    key = ("_default_image", ds, source, tuple(ids))
    ss = st.session_state
    if ss.get("_default_image_key") == key:
        return ss.get("_default_image")
    iid = home.default_image(backend(quiet=True), ids, ds, source)
    if iid is not None:
        ss["_default_image_key"], ss["_default_image"] = key, iid
    return iid


def _browse_box(source: str, dataset: str = "cifar10") -> None:
    names = classes(dataset)
    cls = state.widget(st.selectbox, "Class", "cls", "any", options=["any"] + names)
    class_name = None if cls == "any" else cls
    if st.button("Random image", icon=":material/casino:", key="pick_random", width="stretch"):
        img = backend().random_image(source, class_name, random.randrange(2**31), dataset=dataset)
        if img:
            state.put("image", img["image_id"])
    listing = backend().list_images(source, class_name, limit=1, dataset=dataset)  # only the count
    total = int(listing["total"]) if listing else 0
    if total == 0:
        st.caption("No images here.")
        return
    pages = max(1, -(-total // BROWSE_PAGE))
    page = state.widget(st.number_input, f"Browse page (of {pages})", f"page_{source}_{cls}", 1,
                        lo=1, hi=pages, min_value=1, max_value=pages, step=1)
    listing = backend().list_images(source, class_name, offset=(int(page) - 1) * BROWSE_PAGE, limit=BROWSE_PAGE,
                                    dataset=dataset)
    items = listing["items"] if listing else []
    # three to a row: four left "5..." of a four-digit test-set number in the sidebar (issue 20, finding 10)
    cols = st.columns(3)
    for i, it in enumerate(items):
        with cols[i % 3]:
            im = get_image(it["image_id"], quiet=True)
            if im is not None:
                st.image(display_png(im["pixels"], THUMB_PX, smooth=True), width=THUMB_PX, output_format="PNG")
            st.button(it["image_id"].split(":")[-1], key=f"pick_{it['image_id']}", on_click=_pick,
                      args=(it["image_id"],), help=f'{it["image_id"]} ({it.get("class_name")})',
                      width="stretch")
    st.caption(f"{total} images; click a number to analyse that image.")


def _upload_box(ds: dict | None = None) -> None:
    ds = ds or {"name": "cifar10", "image_size": 32}
    side = int(ds["image_size"])
    up = st.file_uploader(f"Image file (any size; centre-cropped and resized to {side}x{side})",
                          type=["png", "jpg", "jpeg", "gif", "webp", "bmp", "tif", "tiff"], key="upload")
    if up is None:
        return
    done = st.session_state.setdefault("_uploads", {})  # (file id, data set) -> image id, per session
    key = up.file_id if ds["name"] == "cifar10" else f'{up.file_id}@{ds["name"]}'
    if key not in done:
        img = backend().upload_image(up.getvalue(), dataset=ds["name"])
        if img is None:
            return
        done[key] = img["image_id"]
        state.put("image", img["image_id"])
    st.caption("Uploads are kept in the server's memory for a while; the link holds their id.")
