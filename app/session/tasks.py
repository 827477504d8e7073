"""Long work as a queue of backend tasks per session, with a polling progress bar and a cancel button.

A queue is a list of items {"label", "kind", "params", "title"?} run one after another through the
service's task API (start_task / task_status / cancel_task), so it works the same in-process and
over HTTP. Its record lives in st.session_state[slot] (per user):
    {"key": <what was asked>, "items": [...], "next": i, "current": {"label","task_id"} | None,
     "results": {label: result}, "errors": {label: msg}, "state": "running"|"done"|"cancelled"|
     "failed", "done": int, "total": int}
`poller(slot, ...)` is a fragment that reruns itself every POLL_S while the queue runs and
reruns the whole page once when it ends, so results appear without the user doing anything.
"""
from __future__ import annotations

import time

import streamlit as st

from app.session.client import explain_error, get_client
from backend.core.errors import BusyError

# seconds between polls of a running queue (the fragment's run_every). A poll reruns only the
# poller fragment (a task_status call and a progress bar: ~10 ms of CPU) now that the server no
# longer runs gc.collect(2) after every run (.streamlit/config.toml, issue 14), so polling often
# costs the background work nothing measurable and shows a finished result sooner.
POLL_S = 0.25
QUICK_S = 0.3        # how long one poll keeps going while tasks finish at once (cache hits)
QUICK_POLL_S = 0.02


def start(slot: str, key, items: list[dict]) -> None:
    """Queue `items` (run in order) under `slot`, cancelling whatever that slot was running."""
    cancel(slot)
    st.session_state[slot] = {"key": key, "items": list(items), "next": 0, "current": None,
                              "results": {}, "errors": {}, "state": "running", "done": 0, "total": 0,
                              "started": time.time(), "waiting": False}
    advance(slot)


def get(slot: str) -> dict | None:
    return st.session_state.get(slot)


def running(slot: str) -> bool:
    q = get(slot)
    return bool(q and q["state"] == "running")


def advance(slot: str, budget_s: float = QUICK_S) -> dict | None:
    """Poll the current task, collect its result, start the next item; returns the queue record.

    Tasks the service answers from its cache finish within milliseconds, so for up to `budget_s`
    a task just started is polled again at once (every QUICK_POLL_S): a queue of cached results
    completes in one call instead of one poll interval per item."""
    q = get(slot)
    deadline = time.monotonic() + budget_s
    old = q["current"]["task_id"] if q and q.get("current") else None
    while q and q["state"] == "running":
        if not _step(q):
            break
        if q["current"] is None:
            continue  # an item could not start: go on with the next one at once
        if q["current"]["task_id"] == old or time.monotonic() > deadline:
            break  # a task that was already running when we came: one poll is enough
        time.sleep(QUICK_POLL_S)
    return q


def _step(q: dict) -> bool:
    """One poll / start; returns True while there may be more to do right now."""
    client = get_client()
    cur = q["current"]
    if cur is not None:
        try:
            s = client.task_status(cur["task_id"])
        except Exception as e:  # the task vanished (server restart) or the backend is down
            q["errors"][cur["label"]] = explain_error(e)
            q["state"], q["current"] = "failed", None
            return False
        q["done"], q["total"] = int(s.get("done") or 0), int(s.get("total") or 0)
        if s["state"] == "running":
            return True
        if s["state"] == "done":
            q["results"][cur["label"]] = s["result"]
        elif s["state"] == "failed":
            q["errors"][cur["label"]] = s.get("error") or "the task failed"
        else:
            q["state"] = "cancelled"
        q["current"] = None
        if q["state"] != "running":
            return False
    if q["next"] >= len(q["items"]):
        q["state"] = "failed" if q["errors"] and not q["results"] else "done"
        return False
    item = q["items"][q["next"]]
    try:
        task_id = client.start_task(item["kind"], item["params"])
    except BusyError:  # every task worker is busy (tasks.TasksBusy; HTTP 429): wait, do not fail
        q["waiting"] = True  # other sessions hold the workers; try again on the next poll
        return False
    except Exception as e:
        q["errors"][item["label"]] = explain_error(e)
        q["next"] += 1
        return True
    q["waiting"] = False
    # title: how the progress bar and errors name the item (label keys the results: "pgd", a model id)
    q["current"] = {"label": item["label"], "title": item.get("title") or item["label"], "task_id": task_id}
    q["next"] += 1
    q["done"], q["total"] = 0, 0
    return True


def cancel(slot: str) -> None:
    """Stop the running task of `slot` (if any) and the rest of its queue."""
    q = get(slot)
    if not q or q["state"] != "running":
        return
    if q["current"] is not None:
        try:
            get_client().cancel_task(q["current"]["task_id"])
        except Exception:  # already gone: nothing left to stop
            pass
    q["state"], q["current"] = "cancelled", None


def fraction(q: dict) -> float:
    """Overall progress in [0, 1]: finished items plus the current task's done/total."""
    n = max(1, len(q["items"]))
    finished = len(q["results"]) + len(q["errors"])
    part = q["done"] / q["total"] if q["total"] else 0.0
    return min(1.0, (finished + (part if q["current"] else 0.0)) / n)


@st.fragment(run_every=POLL_S)
def poller(slot: str, what: str) -> None:
    """Progress bar + cancel button for `slot`; call it on every page run while `running(slot)`."""
    q = advance(slot)
    if not q:
        return
    if q["state"] != "running" or len(q["results"]) != q.get("shown", 0):
        # the queue ended, or another item finished: redraw the whole page so its results appear
        q["shown"] = len(q["results"])
        st.rerun()
    cur = q["current"]
    label = f"{what}: {cur.get('title') or cur['label']}" if cur else what
    if q.get("waiting"):
        label += " (waiting for a free backend worker)"
    elapsed = time.time() - q["started"]
    st.progress(fraction(q), text=f"{label} - {q['done']}/{q['total'] or '?'} ({elapsed:.0f} s)")
    if st.button("Cancel", key=f"cancel_{slot}", icon=":material/cancel:"):
        cancel(slot)
        st.rerun()


def report(slot: str) -> None:
    """Show errors / cancellation of a finished queue."""
    q = get(slot)
    if not q:
        return
    titles = {it["label"]: it.get("title") or it["label"] for it in q.get("items") or []}
    for label, msg in q["errors"].items():
        st.error(f"{titles.get(label, label)}: {msg}", icon=":material/error:")
    if q["state"] == "cancelled":
        st.warning("Cancelled." + (" Partial results are shown." if q["results"] else ""),
                   icon=":material/cancel:")
