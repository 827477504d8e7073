"""Shared by the app benchmarks: a real `streamlit run app/main.py` server (run from the repository
root, so the project's .streamlit/config.toml applies) and Chromium driven by Playwright.

Not a benchmark itself; imported by bench/app_vs_direct.py, bench/fair_share.py, bench/first_paint.py.
"""
from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from backend.core.runtime import quiet_openmp, wait_for_url

quiet_openmp()  # before torch loads
REPO = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
IDLE_JS = ("() => document.querySelector('[data-testid=\"stApp\"]')"
           "?.getAttribute('data-test-script-state') === 'notRunning'")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(url: str, proc: subprocess.Popen, deadline: float, what: str) -> None:
    """Poll `url` until it answers 200; SystemExit naming `what` when `proc` exits or time.monotonic()
    passes `deadline` first."""
    if not wait_for_url(url, proc, deadline):
        raise SystemExit(f"{what} did not come up")


@contextlib.contextmanager
def app_server(extra_args: list[str] | None = None, env: dict | None = None, start_s: float = 180):
    """Yields (base url, log path) of a running app; the server's process group is stopped after."""

    port = free_port()
    log = Path(tempfile.gettempdir()) / f"robustlens-bench-app-{port}.log"
    cmd = [sys.executable, "-m", "streamlit", "run", "app/main.py", "--server.port", str(port),
           "--server.headless", "true", *(extra_args or [])]
    proc = subprocess.Popen(cmd, cwd=REPO, env={**os.environ, **(env or {})}, stdout=open(log, "wb"),
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(f"{base}/_stcore/health", proc, time.monotonic() + start_s, f"the app (see {log})")
        yield base, log
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, 15)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)


@contextlib.contextmanager
def chromium():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def new_page(browser, width: int = 1440, height: int = 1100, timeout_s: float = 1800):
    ctx = browser.new_context(viewport={"width": width, "height": height})
    page = ctx.new_page()
    page.set_default_timeout(timeout_s * 1000)
    return page


def wait_idle(page, settle_ms: int = 200) -> None:
    page.wait_for_timeout(settle_ms)
    page.wait_for_function(IDLE_JS, polling=50)


def load_avg() -> str:
    return "/".join(f"{v:.1f}" for v in os.getloadavg())
