"""A shared link that names a page's results (run=1, app.session.state.linked_run): whether the page can
run what the link names here, and a notice in plain words when it cannot do all of it (a model or the
data set this server lacks). Nothing is switched silently: a link whose images are missing runs nothing."""
from __future__ import annotations

import streamlit as st

from app.session import state

NOUN = {"test": "test set", "train": "training set", "samples": "offline sample images"}


def linked_open(page: str, models: list[str], src_param: str | None = None, sources: list[str] | None = None,
                dataset_label: str = "the data set", button: str = "Run") -> bool:
    """On this session's first run of `page` from a link with run=1: show what of the link cannot be
    honoured here and return True when the page should run the link's analyses now (on the models it
    has, when some of the link's models are missing). models: the installed model ids; src_param /
    sources: the link's image-source param and the sources this server has. False otherwise."""
    if not state.linked_run(page):
        return False
    gone = state.url_missing("models", models)
    src = state.url_value(src_param) if src_param else None
    if src is not None and sources is not None and src not in sources:
        st.warning(f"This link's results were computed on the {dataset_label} {NOUN.get(src, src)}, which this "
                   f"server does not have, so nothing was run (the images would differ). Choose the images "
                   f"this server has and press **{button}**, or install the data set (Model zoo page).",
                   icon=":material/info:")
        return False
    kept = [m for m in (state.url_value("models") or "").split(",") if m and m not in gone]
    if gone:
        st.warning(f"This link names model(s) this server does not have: {', '.join(gone)}. "
                   + ("Showing the others." if kept or not state.url_value("models") else "Nothing was run."),
                   icon=":material/info:")
        if state.url_value("models") and not kept:
            return False
    return True
