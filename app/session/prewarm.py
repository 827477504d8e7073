"""Computing the app's first views ahead: the home page's default view (app.session.home), then the
Lesson's steps on its sample (app.session.lesson), so a class's first visitors find them in the
service's caches. Its own module because the Lesson builds on the home view's rule (lesson imports
home): `start` composes both without an import cycle. Torch-free.
"""
from __future__ import annotations

import logging
import threading

from app.session import home, lesson

log = logging.getLogger(__name__)


def start(client) -> threading.Thread:
    """default_view(client), then the Lesson's steps on its sample (app.session.lesson), in a daemon
    thread (started and returned). The backend server calls it at launch (its --prewarm)."""
    def work():
        try:
            r = home.default_view(client)
            log.info("default view precomputed: %s", r)
        except Exception:
            log.warning("precomputing the default view failed", exc_info=True)
            return
        try:  # then the Lesson's steps on the same sample, for a class's link
            log.info("lesson precomputed: %s", lesson.lesson_view(client, r.get("default_image")))
        except Exception:
            log.warning("precomputing the lesson failed", exc_info=True)

    t = threading.Thread(target=work, name="robustlens-default-view", daemon=True)
    t.start()
    return t
