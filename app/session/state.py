"""Per-user state: persistent values in st.session_state, mirrored into the URL's query parameters.

Every user choice that defines a view (image, models, attack and its parameters, ...) is a named
*param*. Its value lives in `st.session_state["p_<name>"]`, which survives page switches (Streamlit
drops the state of widgets that a run does not draw, so widgets use their own key "w_<name>" and
copy into the persistent one). On a session's first read a param comes from the URL
(`?image=test:12&models=a,b&eps=8`), so a shared link reproduces the view; each page writes the
params it shows back into the URL. Draw bound widgets with `widget(st.slider, "eps", "eps", 8, ...)`.

Nothing here is shared between sessions: no module-level mutable state.
"""
from __future__ import annotations

from typing import Any, Callable, Iterable

import streamlit as st

_P = "p_"
_W = "w_"


def _parse(raw: Any, default: Any) -> Any:
    """Parse one query-parameter string like `default`'s type; ValueError when it does not fit."""
    if isinstance(raw, list):  # repeated parameter: the last one wins
        raw = raw[-1] if raw else ""
    s = str(raw)
    if isinstance(default, bool):
        if s.lower() in ("1", "true", "yes", "on"):
            return True
        if s.lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError(s)
    if isinstance(default, int):
        return int(s)
    if isinstance(default, float):
        return float(s)
    if isinstance(default, (list, tuple)):
        return [v for v in s.split(",") if v]
    return s


def _format(value: Any) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _valid(value: Any, choices: Iterable | None, lo: float | None, hi: float | None) -> bool:
    if value is None:
        return True
    if choices is not None:
        ch = list(choices)
        if isinstance(value, list):
            return all(v in ch for v in value)
        return value in ch
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (lo is None or value >= lo) and (hi is None or value <= hi)
    return True


def get(name: str, default: Any = None, *, choices: Iterable | None = None,
        lo: float | None = None, hi: float | None = None) -> Any:
    """The param's value: session state, else the URL (first read only), else `default`.

    A stored or URL value outside `choices` / [lo, hi] (e.g. a model that was deleted, a typo in a
    shared link) is replaced by `default`, so a stale value never breaks a widget."""
    ss = st.session_state
    key = _P + name
    if key not in ss:
        value = default
        raw = st.query_params.get_all(name) if name in st.query_params else None
        if raw:
            try:
                value = _parse(raw, default)
            except (TypeError, ValueError):
                value = default
            if choices is not None:  # match by spelling, so "2.5" finds the option 2.5 next to "auto"
                by_text = {_format(c): c for c in choices}
                if isinstance(value, list):
                    value = [by_text.get(_format(v), v) for v in value]
                else:
                    value = by_text.get(_format(raw[-1] if isinstance(raw, list) else raw), value)
        ss[key] = value
    if isinstance(ss[key], list) and choices is not None:
        ch = list(choices)
        kept = [v for v in ss[key] if v in ch]  # drop vanished entries, keep the rest
        if kept != ss[key]:
            ss[key] = kept or default
    if not _valid(ss[key], choices, lo, hi):
        ss[key] = default
    return ss[key]


def put(name: str, value: Any) -> None:
    """Set the param. Its widget shows the new value when it is next drawn (a widget already drawn
    in this run cannot be changed, so the override waits in "d_<name>")."""
    st.session_state[_P + name] = value
    st.session_state["d_" + name] = True


# How each widget takes its initial value (the rest take `value=`).
_DEFAULT_ARG = {"selectbox": "index", "radio": "index", "multiselect": "default"}


def widget(fn: Callable, label: str, name: str, default: Any, *, choices: Iterable | None = None,
           lo: float | None = None, hi: float | None = None, **kwargs) -> Any:
    """Draw `fn(label, key="w_<name>", **kwargs)` bound to param `name`; returns its current value.

    Widgets with options take them as kwargs["options"] (they double as `choices`). The widget is
    always given the param's value as its default (value= / index= / default=), so a browser that
    redraws the widget from scratch shows the same value instead of the widget's own default. Only
    a programmatic change (`put`) or an invalid stored value goes through the Session State API,
    which is how Streamlit pushes a new value into a widget the browser already shows."""
    if "options" in kwargs and choices is None:
        choices = list(kwargs["options"])
    ss = st.session_state
    value = get(name, default, choices=choices, lo=lo, hi=hi)
    wk = _W + name
    if ss.pop("d_" + name, False) or (wk in ss and not _valid(ss[wk], choices, lo, hi)):
        ss[wk] = value
        fn(label, key=wk, **kwargs)
    else:
        arg = _DEFAULT_ARG.get(getattr(fn, "__name__", ""), "value")
        if arg == "index":
            opts = list(kwargs["options"])
            init = opts.index(value) if value in opts else 0
        else:
            init = value
        fn(label, key=wk, **{arg: init}, **kwargs)
    return keep(name)


def keep(name: str) -> Any:
    """Copy the widget's value into the persistent param; returns it."""
    ss = st.session_state
    if _W + name in ss:
        ss[_P + name] = ss[_W + name]
    return ss.get(_P + name)


_EVERY_PAGE = "_every_page_"


def every_page(name: str) -> None:
    """Mark param `name` as one every page's URL carries (the data set chosen in the shared sidebar),
    so that sync_url adds it to the params a page writes."""
    st.session_state[_EVERY_PAGE + name] = True


def sync_url(params: dict[str, Any]) -> None:
    """Make the URL's query string exactly `params` (None values left out) plus the params marked with
    every_page; writes only on change, so an unchanged view sends nothing to the browser."""
    ss = st.session_state
    extra = {k[len(_EVERY_PAGE):]: ss.get(_P + k[len(_EVERY_PAGE):]) for k in list(ss.keys())
             if isinstance(k, str) and k.startswith(_EVERY_PAGE) and k[len(_EVERY_PAGE):] not in params}
    params = {**extra, **params}
    want = {k: _format(v) for k, v in params.items() if v is not None and v != "" and v != []}
    have = {k: st.query_params.get(k) for k in st.query_params.keys()}
    if want != have:
        st.query_params.from_dict(want)


def once(key: str) -> bool:
    """True the first time it is called with `key` in this session (for one-off notices)."""
    k = "_once_" + key
    if st.session_state.get(k):
        return False
    st.session_state[k] = True
    return True


# A link names its page's results with run=1: the page writes it into the URL while the results on screen
# match the settings there, and runs those analyses when a session opens such a link (served from the
# service's cache when someone has already run them), so a class opening the teacher's link waits for
# nothing the teacher computed.
RUN = "run"


def linked_run(page: str) -> bool:
    """True on this session's first run of `page` when its URL says run=1 (the link names results)."""
    return once("linked_run_" + page) and st.query_params.get(RUN) == "1"


def url_value(name: str) -> str | None:
    """The raw value of query parameter `name` as the link gave it (the last one when repeated), or None."""
    vals = st.query_params.get_all(name)
    return str(vals[-1]) if vals else None


def url_missing(name: str, available: Iterable) -> list[str]:
    """The entries of the link's comma-separated param `name` that are not in `available` (a model the
    link names that this server does not have), in the link's order."""
    raw = url_value(name)
    have = {str(a) for a in available}
    return [v for v in (raw or "").split(",") if v and v not in have]
