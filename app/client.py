"""The app's one backend client, shared by every session, and the error boundary around its calls.

`get_client()` is the only `st.cache_resource` in the app: the client (and, in-process, the Service
with its loaded models) is immutable shared infrastructure. Everything a user chooses lives in
`st.session_state`. The cache key holds the environment that decides what `make_client()` builds,
so a test (or a server) that points the app somewhere else gets a client for that place.

`call(name, ...)` runs one client method and turns every failure into an `st.error` message and a
None result, so a bad upload, an out-of-range parameter or a stopped backend never takes the page
down: the user reads what went wrong and the rest of the page keeps working.
"""
from __future__ import annotations

import logging
import os
import time

import streamlit as st

log = logging.getLogger(__name__)

_ENV_KEYS = ("BACKEND_URL", "ROBUSTLENS_TOKEN", "ROBUSTLENS_CHECKPOINTS", "RSUPCON_DATA",
             "ROBUSTLENS_JOB_DATA")


def _env_key() -> tuple:
    return tuple(os.environ.get(k) for k in _ENV_KEYS)


@st.cache_resource(show_spinner="Starting the backend...", max_entries=4)
def _make_client(env_key: tuple):
    # env_key only keys the cache; make_client reads the same variables itself.
    from backend.client import make_client

    client = make_client()
    service = getattr(client, "service", None)  # in-process: warm UMAP and the reference maps now
    if service is not None:
        from backend.service import warm_up_enabled  # already loaded: the in-process client holds a Service

        if warm_up_enabled():
            service.warm_up()
            from app import prewarm  # the home page's default view, in the background (issue 14)

            prewarm.start(client)
    return client


def get_client():
    """The shared client (InProcessClient, or HttpClient when BACKEND_URL is set)."""
    return _make_client(_env_key())


def backend_key() -> str:
    """A short string naming the backend, for keying st.cache_data results per backend."""
    return "|".join(str(v) for v in _env_key())


def _unavailable_types() -> tuple[type, ...]:
    try:
        from backend.client import BackendUnavailable
    except ImportError:  # an older client without the class: connection errors are OSErrors
        return (ConnectionError,)
    return (BackendUnavailable, ConnectionError)


def _busy_type() -> tuple[type, ...]:
    try:
        from backend.errors import BusyError
    except ImportError:  # an older backend without the class
        return ()
    return (BusyError,)


def explain_error(e: BaseException) -> str:
    """One clear sentence for the user about a failed backend call."""
    if isinstance(e, _busy_type()):
        return (f"The backend is busy serving other users and did not get to this request: {e}. "
                "Try again in a few seconds.")
    if isinstance(e, _unavailable_types()):
        url = os.environ.get("BACKEND_URL", "")
        return (f"The backend is not reachable{f' at {url}' if url else ''}: {e}. Start it with "
                "`python -m backend.server` (or unset BACKEND_URL to run it inside the app), then retry.")
    if isinstance(e, ValueError):
        return str(e)
    return f"Unexpected backend error ({type(e).__name__}): {e}"


def call(name: str, *args, where=None, quiet: bool = False, **kwargs):
    """client.<name>(*args, **kwargs), or None after showing the error in `where` (default: st).

    quiet=True logs the failure without showing it (for optional decorations of a page). A busy
    backend (BusyError: the device queue is full) is retried twice, with "busy, retrying" shown."""
    try:
        client = get_client()
        for attempt in range(3):
            try:
                return getattr(client, name)(*args, **kwargs)
            except _busy_type() as e:
                if attempt == 2:
                    raise
                if not quiet:
                    st.toast("The backend is busy, retrying...", icon=":material/hourglass_top:")
                time.sleep(min(max(getattr(e, "retry_after", 1.0), 0.1), 5.0))
    except Exception as e:  # the UI boundary: every failure becomes a message, the page lives on
        if not isinstance(e, ValueError):
            log.exception("backend call %s failed", name)
        if not quiet:
            (where or st).error(explain_error(e), icon=":material/error:")
        return None


@st.cache_data(show_spinner=False, max_entries=2048)
def _image(backend: str, image_id: str) -> dict:
    # Pure: an image id names fixed pixels (uploads are named by their content hash).
    return get_client().get_image(image_id)


def get_image(image_id: str, where=None, quiet: bool = False) -> dict | None:
    """The image dict {"image_id","label","class_name","pixels" (32,32,3) uint8}, cached per backend."""
    try:
        return _image(backend_key(), image_id)
    except Exception as e:
        if not quiet:
            (where or st).error(explain_error(e), icon=":material/error:")
        return None


@st.cache_data(show_spinner=False, max_entries=8)
def _classes(backend: str) -> list[str]:
    return list(get_client().classes())


def classes() -> list[str]:
    """Class names (CIFAR-10 order); falls back to CIFAR-10 if the backend cannot be asked."""
    try:
        return _classes(backend_key())
    except Exception as e:
        st.error(explain_error(e), icon=":material/error:")
        from backend.data import CIFAR10_CLASSES

        return list(CIFAR10_CLASSES)


def models() -> list[dict]:
    """Model cards, rsupcon first; [] (with the error shown) when the backend cannot list them.

    Not cached here: a finished training job must appear on the next rerun."""
    out = call("list_models")
    return list(out) if out else []
