"""A classroom through the real front end: N students' sessions on the Streamlit app in HTTP mode.

    python bench/classroom_browser.py [--students 30] [--follow 0.7] [--loads below,above]
                                      [--seconds 150] [--alone-seconds 45] [--client ws|browser] [--seed 0]
                                      [--burst-start] [--repeat-views] [--trace actions.csv]

Unlike bench/classroom.py (which calls the backend directly, one HttpClient per simulated student),
every student here is a session of `streamlit run app/main.py` with BACKEND_URL pointing at
`python -m backend.transport.server`; the app sends each session's X-RobustLens-Session. Both run on
127.0.0.1 (free ports), started by this script, stopped on exit. A student is, with --client ws
(default), Streamlit's own client protocol without a browser (see WsPage: the same messages a
browser sends and reads, and the images it fetches; no rendering), or with --client browser a
headless Chromium page (one browser, a context per student). On one 2-core machine 30 Chromium
pages use most of the CPU themselves (measured: 82 of the class phase's 158 CPU-seconds, the
backend 19, Streamlit 11), so the browser mode measures the browsers more than the app; in a real
classroom that rendering happens on the students' machines.

The page is the attack lab (home) with the app's defaults: every installed model, PGD-10 L-inf,
gradient saliency. A *view* is (image, eps): one of the 12 sample images on the sidebar's first
browse page and eps in 1..32 /255 (the slider's range). An *action* changes one of them the way a
student does it: a click on an image's number in the sidebar, or one arrow-key press on the eps
slider. Its latency is key press / click -> the page idle again (Streamlit's script state) showing
the new image's caption and the summary line "**... eps k/255 ...** - fooled ..."
(attack_ui.outcome_headline; so every model's column is drawn). An action that shows an error, or
is not done within --timeout seconds, is an error.

For each load (a fresh backend and app each, so no load starts with another's caches):
  1. one student alone (an explorer) for --alone-seconds: the reference, in the same run;
  2. --students students at once, for --seconds. A share --follow of them follow the teacher: the
     teacher's view changes every `teacher_every` seconds (a new image, or eps one step up or down;
     seeded; new to the server, like the explorers'), each follower reacts within --react seconds
     and makes the actions that bring its page to that view, then reads for a think time and waits
     for the teacher's next change. The others explore: an action to a random neighbouring view (a
     new image or eps +-1) that nobody (the single student included) has asked for in this load
     while there is one, so each explorer action is new work for the server (--repeat-views: any
     neighbour), then a think time.
The loads (think time in seconds, teacher's period):  below: think 12-24, teacher every 20 s;
above: think 0.5-2, teacher every 5 s (see LOADS).

Printed per load: each student's actions, p50 / p95 and errors; all actions' p50 / p95 beside the
single student's (and the ratio of the p95s); the fairness spread (the slowest student's median /
the fastest's, over every student, and within followers and explorers); page updates per second;
heavy backend requests (predict, attack) served per second, read from the server's access log;
peak resident memory (VmHWM) of the backend and of the Streamlit server; CPU seconds used in the
class phase by the backend, the Streamlit server and Chromium (on one machine the browsers' cost
is part of the measurement; in a real classroom it is on the students' machines).
"""
from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from appserver import CHROMIUM, CHROMIUM_ARGS, REPO, free_port, load_avg, wait_healthy  # noqa: E402

IMAGES = [f"samples:{i}" for i in range(12)]  # the sidebar's first browse page
# eps in k/255, the eps slider's offered range (0..32) less 0: 12 x 32 = 384 views. With 1..16 (192 views, the
# runs before issue 21's third round) an above-capacity load had asked for nearly all of them after ~90 s, and
# from then on explorers' "new" views were cache hits (0.1-0.8 s answers beside 8 s waits).
EPS_RANGE = (1, 32)
# the attack lab's summary line: "**PGD, L-inf, eps 8/255, 10 steps** - fooled **2 of 5** models ..."
# (app.widgets.attack_ui.outcome_headline: fooled / prediction changed / target ... reached)
HEADLINE = re.compile(r"\*\* - (?:fooled|prediction changed|target) ")
# name: (think time range in s, the teacher's period in s)
LOADS = {"below": ((12.0, 24.0), 20.0), "above": ((0.5, 2.0), 5.0)}

DONE_JS = """([img, eps]) => {
  const app = document.querySelector('[data-testid="stApp"]');
  if (!app || app.getAttribute('data-test-script-state') !== 'notRunning') return false;
  const main = document.querySelector('[data-testid="stMain"]');
  if (main && main.querySelector('[data-testid="stAlertContentError"], [data-testid="stException"]'))
    return 'error: ' + main.querySelector('[data-testid="stAlertContentError"], [data-testid="stException"]')
      .innerText.slice(0, 200);
  const side = document.querySelector('[data-testid="stSidebar"]');
  if (!main || !side) return false;
  const m = main.innerText;
  return side.innerText.includes(img + ' - ') &&
         new RegExp('eps ' + eps + '/255[^\\n]* - (fooled|prediction changed|target)').test(m);
}"""


# ---- processes -------------------------------------------------------------------------------------
def proc_status(pid: int, key: str) -> float:
    """A /proc/<pid>/status field in MiB (VmRSS, VmHWM); nan when the process is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def _children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            kids.setdefault(ppid, []).append(int(d))
    return kids


def cpu_s(root: int, exe_in: str | None = None) -> float:
    """CPU seconds (user + system) of `root` and its living descendants (only those whose program's
    path contains exe_in, when given)."""
    kids, todo, total, tick = _children(), [root], 0.0, os.sysconf("SC_CLK_TCK")
    while todo:
        pid = todo.pop()
        todo += kids.get(pid, [])
        try:
            if exe_in:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    if exe_in.encode() not in f.read().split(b"\0")[0]:
                        continue  # not counted; its descendants are (the browser under Playwright's driver)
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
        except (OSError, IndexError, ValueError):
            continue
    return total


class Servers:
    """The backend server and the Streamlit app in HTTP mode on 127.0.0.1, each in its own process group."""

    def __init__(self, checkpoints: str | None):

        env = {**os.environ, "ROBUSTLENS_WARM_UP": "0"}
        env.pop("ROBUSTLENS_SESSION", None)
        bport, aport = free_port(), free_port()
        tmp = Path(tempfile.gettempdir())
        self.backend_log = tmp / f"robustlens-classroom-backend-{bport}.log"
        self.app_log = tmp / f"robustlens-classroom-app-{aport}.log"
        cmd = [sys.executable, "-m", "backend.transport.server", "--port", str(bport), "--log-level", "info"]
        if checkpoints:
            cmd += ["--checkpoints", checkpoints]
        self.backend = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=open(self.backend_log, "wb"),
                                        stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        self.backend_url = f"http://127.0.0.1:{bport}"
        self.app = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", "app/main.py", "--server.port", str(aport),
             "--server.headless", "true"], cwd=REPO, env={**env, "BACKEND_URL": self.backend_url},
            stdout=open(self.app_log, "wb"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True)
        self.url = f"http://127.0.0.1:{aport}"
        deadline = time.monotonic() + 180
        for url, proc, log in ((f"{self.backend_url}/health", self.backend, self.backend_log),
                               (f"{self.url}/_stcore/health", self.app, self.app_log)):
            try:
                wait_healthy(url, proc, deadline, f"{url} (see {log})")
            except SystemExit:
                self.close()
                raise

    def heavy_served(self) -> int:
        """Heavy requests (predict, attack) the backend has answered 200 so far (its access log)."""
        text = self.backend_log.read_text(errors="replace")
        return len(re.findall(r'"POST /(?:predict|attack) HTTP/1.1" 200', text))

    def close(self) -> None:
        for p in (self.app, self.backend):
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(10)


# ---- students --------------------------------------------------------------------------------------
@dataclass
class Student:
    name: str
    role: str  # "follower" | "explorer" | "alone"
    view: tuple[str, int]
    waits: list[float] = field(default_factory=list)
    trace: list[tuple[float, float, str]] = field(default_factory=list)  # (start, seconds, what) per action
    errors: list[str] = field(default_factory=list)
    repeats: int = 0  # explorer: actions toward a view the server had been asked for before (no new view left near)


class Teacher:
    """The teacher's view, a seeded walk: every `every` seconds a new image or eps one step."""

    def __init__(self, start: tuple[str, int], every: float, seed: int, visited: set | None = None):
        self.rng, self.every, self.visited = random.Random(seed), every, visited
        self.view, self.version = start, 0
        self.changed = asyncio.Event()

    async def run(self, until: float) -> None:
        while time.monotonic() + self.every < until:
            await asyncio.sleep(self.every)
            self.view, self.version = neighbour(self.rng, self.view, self.visited), self.version + 1
            self.changed.set()
            self.changed = asyncio.Event()


def neighbour(rng: random.Random, view: tuple[str, int], visited: set | None = None) -> tuple[str, int]:
    """A view one action away: another image (half the time) or eps one step. With `visited` (the
    views the server has been asked for in this load), one not in it when there is one (then added):
    new work for the server, not a cache hit another student's walk happened to leave."""
    img, eps = view
    lo, hi = EPS_RANGE
    images = [(i, eps) for i in IMAGES if i != img]
    steps = [(img, e) for e in (eps - 1, eps + 1) if lo <= e <= hi]
    if visited is not None:
        images = [v for v in images if v not in visited] or images
        steps = [v for v in steps if v not in visited] or steps
        new_images, new_steps = (any(v not in visited for v in vs) for vs in (images, steps))
        pick_image = rng.random() < 0.5 if new_images == new_steps else new_images
    else:
        pick_image = rng.random() < 0.5
    out = rng.choice(images if pick_image else steps)
    if visited is not None:
        visited.add(out)
    return out


async def action(page, s: Student, target: tuple[str, int], timeout_s: float, until: float | None) -> None:
    """One step from s.view toward target (the image first, then eps by one), timed to the page
    showing it. Recorded in s.waits (or s.errors) unless it started after `until`."""
    img, eps = s.view
    nxt = (target[0], eps) if target[0] != img else (img, eps + (1 if target[1] > eps else -1))
    t0 = time.monotonic()
    try:
        err = await asyncio.wait_for(page.act(s.view, nxt), timeout_s)
    except Exception as e:  # a timeout, a page or connection that died
        err = f"{type(e).__name__}: {(str(e).splitlines() or [''])[0][:200]}"
    took = time.monotonic() - t0
    if until is not None and t0 > until:
        return
    if err:
        s.errors.append(err)
        await page.open(s.view, timeout_s)  # start again from a fresh page
        return
    s.view = nxt
    s.waits.append(took)
    s.trace.append((t0, took, "image" if nxt[0] != img else "eps"))


class BrowserPage:
    """A student's Chromium page (its own browser context, so its own Streamlit session)."""

    def __init__(self, browser, base: str):
        self.browser, self.base, self.ctx, self.page = browser, base, None, None

    async def open(self, view: tuple[str, int], timeout_s: float) -> None:
        if self.ctx is not None:
            await self.ctx.close()
        self.ctx = await self.browser.new_context(viewport={"width": 1440, "height": 1100})
        self.page = await self.ctx.new_page()
        await self.page.goto(f"{self.base}/?image={view[0]}&eps={view[1]}")
        await self.page.wait_for_function(DONE_JS, arg=list(view), polling=100, timeout=timeout_s * 1000)

    async def act(self, view: tuple[str, int], nxt: tuple[str, int]) -> str | None:
        page = self.page
        if nxt[0] != view[0]:
            await page.locator('[data-testid="stSidebar"]').get_by_role(
                "button", name=nxt[0].split(":")[1], exact=True).click()
        else:
            thumb = page.locator('[data-testid="stMain"]').get_by_role("slider").first
            await thumb.press("ArrowRight" if nxt[1] > view[1] else "ArrowLeft")
        res = await (await page.wait_for_function(DONE_JS, arg=list(nxt), polling=50, timeout=0)).json_value()
        return res if isinstance(res, str) else None

    async def close(self) -> None:
        if self.ctx is not None:
            await self.ctx.close()


class WsPage:
    """A student as Streamlit's own browser client talks to the server, without a browser: one
    websocket on /_stcore/stream (its own session), the same BackMsg a click or a key press sends
    (a button's trigger; the slider's new value with its fragment's id, so only the fragment
    reruns, as in the browser), every ForwardMsg read until the run has finished, and each image
    the page shows fetched from the app's media endpoint once (a browser caches them by URL)."""

    def __init__(self, base: str):
        self.base, self.ws, self.widgets, self.cache, self.seen = base, None, {}, {}, set()
        self.http = None

    async def open(self, view: tuple[str, int], timeout_s: float) -> None:
        import httpx
        import websockets

        await self.close()
        self.http = httpx.AsyncClient(base_url=self.base, limits=httpx.Limits(max_connections=6))
        self.ws = await websockets.connect(self.base.replace("http", "ws", 1) + "/_stcore/stream",
                                           subprotocols=["streamlit"], max_size=2**26, open_timeout=timeout_s)
        self.query = f"image={view[0]}&eps={view[1]}"
        err = await asyncio.wait_for(self._run(view), timeout_s)
        if err:
            raise RuntimeError(f"the page did not open: {err}")

    async def act(self, view: tuple[str, int], nxt: tuple[str, int]) -> str | None:
        from streamlit.proto.BackMsg_pb2 import BackMsg

        b = BackMsg()
        rs = b.rerun_script
        rs.query_string = self.query
        w = rs.widget_states.widgets.add()
        if nxt[0] != view[0]:
            w.id, _ = self._widget("pick_" + nxt[0])
            w.trigger_value = True
        else:
            w.id, rs.fragment_id = self._widget("w_eps")
            w.double_array_value.data.append(float(nxt[1]))
        self.query = f"image={nxt[0]}&eps={nxt[1]}"
        return await self._run(nxt, b.SerializeToString())

    def _widget(self, key: str) -> tuple[str, str]:
        for wid, frag in self.widgets.items():
            if wid.endswith("-" + key):
                return wid, frag
        raise RuntimeError(f"the page shows no widget {key!r}")

    async def _run(self, view: tuple[str, int], send: bytes | None = None) -> str | None:
        """Send `send` (None: the first run), read until the run ends; an error shown, or why the
        page does not show `view`, else None. Then fetch the new images."""
        from streamlit.proto.BackMsg_pb2 import BackMsg
        from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

        first = send is None
        if first:
            b = BackMsg()
            b.rerun_script.query_string = self.query
            send = b.SerializeToString()
        await self.ws.send(send)
        summary, caption, error, media = False, False, None, []
        want = f"eps {view[1]}/255"
        while True:
            m = ForwardMsg()
            m.ParseFromString(await self.ws.recv())
            if m.WhichOneof("type") == "ref_hash":  # a message the server thinks this client has cached
                m = self.cache[m.ref_hash]
            elif m.hash:
                self.cache[m.hash] = m
            kind = m.WhichOneof("type")
            if kind == "delta" and m.delta.WhichOneof("type") == "new_element":
                el = m.delta.new_element
                et = el.WhichOneof("type")
                sub = getattr(el, et)
                if getattr(sub, "id", ""):
                    self.widgets[sub.id] = m.delta.fragment_id
                if et == "markdown" and HEADLINE.search(sub.body):
                    summary = want in sub.body
                elif et == "imgs":
                    media += [i.url for i in sub.imgs]
                    caption = caption or any(i.caption.startswith(view[0] + " - ") for i in sub.imgs)
                elif (et == "alert" and sub.format == 1) or et == "exception":  # Alert.ERROR
                    error = error or (sub.message if et == "exception" else sub.body)[:200]
            elif kind == "script_finished" and m.script_finished != 2:  # 2: ended early for a rerun
                break
        if error:
            return f"error shown: {error}"
        new = [u for u in dict.fromkeys(media) if u not in self.seen]
        got = await asyncio.gather(*(self._get(u) for u in new))
        bad = [r.status_code for r in got if r.status_code != 200]
        self.seen.update(new)
        if bad:
            return f"media answered {bad[:3]}"
        if not summary:
            return f"the page does not show the result for {want}"
        if not first and not caption and m.script_finished == 0:  # a full run redraws the sidebar
            return f"the sidebar does not show {view[0]}"
        return None

    async def _get(self, url: str):
        """GET, sent again once when a kept-alive connection was closed under it (as browsers do)."""
        import httpx

        try:
            return await self.http.get(url)
        except (httpx.RemoteProtocolError, httpx.ReadError):
            return await self.http.get(url)

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()
            self.ws = None
        if self.http is not None:
            await self.http.aclose()
            self.http = None


async def explorer(page, s: Student, rng: random.Random, think, until: float, timeout_s: float,
                   visited: set | None = None, read_first: bool = False) -> None:
    if read_first:  # the page just opened: read it for a think time before the first action
        await asyncio.sleep(rng.uniform(*think))
    while time.monotonic() < until:
        known = None if visited is None else len(visited)
        target = neighbour(rng, s.view, visited)
        s.repeats += known is not None and len(visited) == known
        await action(page, s, target, timeout_s, until)
        await asyncio.sleep(rng.uniform(*think))


async def follower(page, s: Student, rng: random.Random, teacher: Teacher, think, react: float, until: float,
                   timeout_s: float) -> None:
    seen = 0
    while time.monotonic() < until:
        if teacher.version == seen:
            try:
                await asyncio.wait_for(teacher.changed.wait(), timeout=max(0.0, until - time.monotonic()))
            except TimeoutError:
                return
        seen = teacher.version
        await asyncio.sleep(rng.uniform(0, react))
        while s.view != teacher.view and time.monotonic() < until:
            await action(page, s, teacher.view, timeout_s, until)
        await asyncio.sleep(rng.uniform(*think))


# ---- one load ----------------------------------------------------------------------------------------
def med(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def pct(xs: list[float], q: float) -> float:
    """The q-quantile by nearest rank."""
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, round(q * (len(xs) - 1))))]


async def run_load(a, name: str) -> dict:
    think, every = LOADS[name]
    rng = random.Random(f"{a.seed}-{name}")
    servers = Servers(a.checkpoints)
    pw = browser = None
    try:
        if a.client == "browser":
            from playwright.async_api import async_playwright

            pw = await async_playwright().start()
            browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)

        def new_page():
            return BrowserPage(browser, servers.url) if browser is not None else WsPage(servers.url)

        # 1. one student alone (an explorer): the reference
        alone = Student("alone", "alone", (IMAGES[11], 8))
        visited = {alone.view} if a.new_views else None
        page = new_page()
        await page.open(alone.view, 300)
        end = time.monotonic() + a.alone_seconds
        await explorer(page, alone, random.Random(f"{a.seed}-alone-{name}"), (0.5, 1.0), end, a.timeout, visited)
        await page.close()
        # 2. the class: open every page (not timed), five at a time as a class arrives, then run
        n_follow = round(a.students * a.follow)
        start = (IMAGES[0], 8)
        students = [Student(f"s{i:02d}", "follower" if i < n_follow else "explorer",
                            start if i < n_follow else (rng.choice(IMAGES), rng.randint(*EPS_RANGE)))
                    for i in range(a.students)]
        if visited is not None:
            visited.update(s.view for s in students)
        pages = [new_page() for _ in students]
        t_open = time.monotonic()
        for k in range(0, len(students), 5):
            await asyncio.gather(*(p.open(s.view, 300) for p, s in zip(pages[k:k + 5], students[k:k + 5])))
        t_open = time.monotonic() - t_open
        pids = {"backend": servers.backend.pid, "app": servers.app.pid}
        cpu0 = {k: cpu_s(p) for k, p in pids.items()} | {"chromium": cpu_s(os.getpid(), "chromium")}
        served0, t0 = servers.heavy_served(), time.monotonic()
        until = t0 + a.seconds
        teacher = Teacher(start, every, a.seed, visited)
        jobs = [teacher.run(until)]
        for s, page in zip(students, pages):
            r = random.Random(f"{a.seed}-{name}-{s.name}")
            if s.role == "follower":
                jobs.append(follower(page, s, r, teacher, think, a.react, until, a.timeout))
            else:
                jobs.append(explorer(page, s, r, think, until, a.timeout, visited, read_first=not a.burst_start))
        await asyncio.gather(*jobs)
        wall = time.monotonic() - t0
        await asyncio.sleep(1.0)  # the access log's last lines
        cpu = {k: cpu_s(p) - cpu0[k] for k, p in pids.items()} | {
            "chromium": cpu_s(os.getpid(), "chromium") - cpu0["chromium"]}
        served = servers.heavy_served() - served0
        mem = {"backend": proc_status(servers.backend.pid, "VmHWM"), "app": proc_status(servers.app.pid, "VmHWM")}
        await asyncio.gather(*(p.close() for p in pages))
    finally:
        if browser is not None:
            await browser.close()
        if pw is not None:
            await pw.stop()
        servers.close()
    return {"name": name, "think": think, "every": every, "alone": alone, "students": students, "wall": wall,
            "served": served, "cpu": cpu, "mem": mem, "open_s": t_open}


def report(r: dict) -> None:
    alone, students = r["alone"], r["students"]
    allw = [w for s in students for w in s.waits]
    errs = sum(len(s.errors) for s in students)
    print(f"\n## load {r['name']}: think {r['think'][0]:g}-{r['think'][1]:g} s, teacher every {r['every']:g} s, "
          f"{len(students)} students, {r['wall']:.0f} s (class opened in {r['open_s']:.0f} s)")
    print("student  role      actions  p50 s  p95 s  errors")
    for s in students:
        print(f"{s.name:7s}  {s.role:8s}  {len(s.waits):7d}  {med(s.waits):5.2f}  {pct(s.waits, .95):5.2f}  "
              f"{len(s.errors):6d}")
    print(f"alone    explorer  {len(alone.waits):7d}  {med(alone.waits):5.2f}  {pct(alone.waits, .95):5.2f}  "
          f"{len(alone.errors):6d}")
    p95, a95 = pct(allw, .95), pct(alone.waits, .95)
    print(f"class: {len(allw)} actions, {errs} errors, p50 {med(allw):.2f} s, p95 {p95:.2f} s; alone p50 "
          f"{med(alone.waits):.2f} s, p95 {a95:.2f} s; p95 ratio {p95 / a95:.1f}x")
    for label, group in (("all", students), ("followers", [s for s in students if s.role == "follower"]),
                         ("explorers", [s for s in students if s.role == "explorer"])):
        meds = [statistics.median(s.waits) for s in group if s.waits]
        if meds:
            print(f"fairness spread ({label}): slowest median {max(meds):.2f} s / fastest {min(meds):.2f} s = "
                  f"{max(meds) / min(meds):.1f}x ({len(meds)} students with actions)")
    ex = [s for s in students if s.role == "explorer"]
    if ex:
        print(f"explorer actions toward a view asked for before in this load (no new one left beside theirs): "
              f"{sum(s.repeats for s in ex)} of {sum(len(s.waits) + len(s.errors) for s in ex)}")
    print(f"page updates/s {len(allw) / r['wall']:.2f}; heavy backend requests served/s {r['served'] / r['wall']:.2f} "
          f"({r['served']} predict/attack)")
    print(f"peak memory: backend {r['mem']['backend']:.0f} MiB, Streamlit server {r['mem']['app']:.0f} MiB; CPU s in "
          f"the class phase: backend {r['cpu']['backend']:.0f}, Streamlit {r['cpu']['app']:.0f}, "
          f"Chromium {r['cpu']['chromium']:.0f} (of {2 * r['wall']:.0f} on {os.cpu_count()} cores)")
    for s in students:
        for e in s.errors[:2]:
            print(f"  {s.name} error: {e}")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--students", type=int, default=30)
    ap.add_argument("--follow", type=float, default=0.7, help="share of students following the teacher")
    ap.add_argument("--loads", default="below,above", help=f"comma-separated, of {list(LOADS)}")
    ap.add_argument("--seconds", type=float, default=150, help="class phase per load")
    ap.add_argument("--alone-seconds", type=float, default=45)
    ap.add_argument("--react", type=float, default=2.0, help="a follower reacts within this many seconds")
    ap.add_argument("--timeout", type=float, default=60.0, help="an action not done by then is an error")
    ap.add_argument("--checkpoints", default=None)
    ap.add_argument("--client", choices=("ws", "browser"), default="ws",
                    help="ws: Streamlit's websocket protocol, no rendering (default); browser: headless Chromium")
    ap.add_argument("--repeat-views", dest="new_views", action="store_false",
                    help="explorers walk at random, landing on views computed before (default: each explorer "
                         "action and teacher change asks for a view nobody asked for in this load while there is one)")
    ap.add_argument("--burst-start", action="store_true",
                    help="every explorer's first action at the class phase's first instant (the model of the runs "
                         "before issue 21's third round; default: each explorer first reads its page for a think "
                         "time, so the class's new work arrives at the load's rate from the start)")
    ap.add_argument("--trace", default=None, help="write every action (load, student, role, start s, seconds, "
                                                  "kind) to this CSV file")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    loads = [x.strip() for x in a.loads.split(",") if x.strip()]
    bad = [x for x in loads if x not in LOADS]
    if bad or not 0 <= a.follow <= 1 or a.students < 1:
        raise SystemExit(f"bad arguments: loads {bad or loads} (of {list(LOADS)}), follow {a.follow} (0..1), "
                         f"students {a.students} (>= 1)")
    head = subprocess.run(["git", "log", "-1", "--format=%h %s"], cwd=REPO, capture_output=True,
                          text=True).stdout.strip()[:72]
    print(f"# classroom through the app ({a.client}): {a.students} students, follow {a.follow:g}, "
          f"{'burst start' if a.burst_start else 'explorers read first'}, HEAD {head}, "
          f"{os.cpu_count()} cores, load {load_avg()} at start")
    rows = []
    for name in loads:
        r = asyncio.run(run_load(a, name))
        report(r)
        print(f"(load average {load_avg()} after)", flush=True)
        t0 = min((t for s in r["students"] for t, _, _ in s.trace), default=0.0)
        rows += [(name, s.name, s.role, f"{t - t0:.2f}", f"{w:.3f}", k) for s in r["students"] for t, w, k in s.trace]
    if a.trace:
        import csv

        with open(a.trace, "w", newline="") as f:
            csv.writer(f).writerows([("load", "student", "role", "start_s", "seconds", "kind"), *rows])


if __name__ == "__main__":
    main()
