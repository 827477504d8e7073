"""The class key: with ROBUSTLENS_CLASS_KEY set (scripts/classroom.py sets one), a session sees the
app only when its link carries `?key=<the key>`; the key then stays in every page's URL, so a
reload or a shared view keeps working. Without the variable the app is open (a local install).

Streamlit has no login of its own; this keeps people who did not get the teacher's link (anyone
else on a school network the app listens on) out of a class's app and its backend."""
from __future__ import annotations

import hmac
import os

import streamlit as st

from app.session import state

ENV = "ROBUSTLENS_CLASS_KEY"


def admitted() -> bool:
    """True when no class key is set, or this session's link carries it; otherwise shows why not."""
    want = os.environ.get(ENV, "")
    if not want:
        return True
    got = state.get("key", "")
    if isinstance(got, str) and hmac.compare_digest(got.encode(), want.encode()):
        state.every_page("key")
        return True
    st.error("This RobustLens classroom opens from the link your teacher handed out (it ends with "
             "`?key=...`); this link has " + ("a different key." if got else "no key."), icon=":material/lock:")
    return False
