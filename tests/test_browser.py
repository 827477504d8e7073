"""The app in a real browser: `streamlit run app/main.py` driven by Playwright on Debian's Chromium, once
with the backend in the app's process and once over HTTP (`python -m backend.transport.server`, BACKEND_URL).

Every page is opened and must render without an exception; the attack lab must show images and
numbers and react to the image picker and the eps slider; a point hovered in the embedding explorer
must show the image's thumbnail, a box drawn there must list the images inside, and a point clicked
there must open that image in the attack lab. Screenshots go to test-artifacts/ (gitignored). Waits are
bounded; the subprocesses are killed in teardown."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.helpers import write_tiny_models

pytestmark = pytest.mark.browser

REPO = Path(__file__).resolve().parent.parent
ARTIFACTS = REPO / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
# url path -> (title, text that appears once the page has finished its first run)
PAGES = {"": ("Attack lab", "L-inf 8.0/255"), "saliency_studio": ("Saliency studio", "drift rho"),
         "embeddings": ("Embedding explorer", "Compute maps"), "robustness": ("Robustness", "press **Run**"),
         "corruptions": ("Corruptions", "Clean prediction kept"),
         "feature_lens": ("Feature lens", "Run the lens"), "train": ("Train", "No jobs yet"),
         "zoo": ("Model zoo", "Comparison")}
START_S = 90    # bound on a server coming up
RENDER_S = 120  # bound on a page finishing its first (cold) run

if not Path(CHROMIUM).exists():
    pytest.skip(f"{CHROMIUM} is missing (install Debian's chromium: apt-get install -y chromium); "
                "Playwright cannot download browsers here", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_http(url: str, proc: subprocess.Popen, log: Path) -> None:
    import httpx

    deadline = time.monotonic() + START_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args} exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"{url} did not come up in {START_S} s:\n{log.read_text()[-3000:]}")


def _start(cmd: list[str], env: dict, log: Path) -> subprocess.Popen:
    # own process group: teardown stops the server and anything it started
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=open(log, "wb"), stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True)


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


@contextmanager
def app_server(ckpt: Path, tmp: Path):
    """`streamlit run app/main.py` (in-process backend) on the checkpoints in `ckpt`, the offline samples
    only, synthetic job data; yields its base URL and stops it (and all it started) on exit."""
    nodata = tmp / "nodata"
    nodata.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k not in ("BACKEND_URL", "ROBUSTLENS_TOKEN")}
    env.update(ROBUSTLENS_CHECKPOINTS=str(ckpt), RSUPCON_DATA=str(nodata), ROBUSTLENS_JOB_DATA="synthetic")
    port = _free_port()
    proc = _start([sys.executable, "-m", "streamlit", "run", "app/main.py", "--server.port", str(port),
                   "--server.headless", "true", "--browser.gatherUsageStats", "false"], env, tmp / "app.log")
    try:
        _wait_http(f"http://127.0.0.1:{port}/_stcore/health", proc, tmp / "app.log")
        yield f"http://127.0.0.1:{port}"
    finally:
        _stop(proc)


@pytest.fixture(scope="module", params=["inprocess", "http"])
def app_url(request, tmp_path_factory):
    """Base URL of a running app (in-process backend, or the HTTP backend in its own process)."""
    tmp = tmp_path_factory.mktemp(f"browser_{request.param}")
    ckpt, nodata = tmp / "ckpt", tmp / "nodata"
    write_tiny_models(ckpt)
    nodata.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("BACKEND_URL", "ROBUSTLENS_TOKEN")}
    env.update(ROBUSTLENS_CHECKPOINTS=str(ckpt), RSUPCON_DATA=str(nodata), ROBUSTLENS_JOB_DATA="synthetic")
    procs = []
    try:
        if request.param == "http":
            port = _free_port()
            procs.append(_start([sys.executable, "-m", "backend.transport.server", "--port", str(port)], env, tmp / "server.log"))
            _wait_http(f"http://127.0.0.1:{port}/health", procs[-1], tmp / "server.log")
            env["BACKEND_URL"] = f"http://127.0.0.1:{port}"
        port = _free_port()
        procs.append(_start([sys.executable, "-m", "streamlit", "run", "app/main.py", "--server.port", str(port),
                             "--server.headless", "true", "--browser.gatherUsageStats", "false"],
                            env, tmp / "app.log"))
        _wait_http(f"http://127.0.0.1:{port}/_stcore/health", procs[-1], tmp / "app.log")
        yield request.param, f"http://127.0.0.1:{port}"
    finally:
        for p in reversed(procs):
            _stop(p)


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def page(browser):
    ctx = browser.new_context(viewport={"width": 1600, "height": 2400})
    pg = ctx.new_page()
    pg.set_default_timeout(RENDER_S * 1000)
    try:
        yield pg
    finally:
        ctx.close()


def settle(pg) -> None:
    """Wait until no script run is going on (the app root's script state reads notRunning)."""
    pg.wait_for_timeout(300)
    pg.wait_for_function("() => document.querySelector('[data-testid=\"stApp\"]')"
                         "?.getAttribute('data-test-script-state') === 'notRunning'", timeout=RENDER_S * 1000)
    pg.wait_for_timeout(200)


def no_exception(pg) -> None:
    exc = pg.locator('[data-testid="stException"]')
    assert exc.count() == 0, exc.first.inner_text()


def open_ready(pg, url: str, ready: str):
    """Go to url, wait for the text `ready` and the script run's end, check for exceptions; the main area."""
    pg.goto(url)
    pg.get_by_text(ready, exact=False).first.wait_for()
    settle(pg)
    no_exception(pg)
    return pg.locator('[data-testid="stMain"]')


def shot(pg, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    pg.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def test_every_page_renders(app_url, page):
    transport, base = app_url
    for path, (title, ready) in PAGES.items():
        page.goto(f"{base}/{path}")
        page.get_by_role("heading", name=title, level=1).wait_for()
        page.get_by_text(ready.replace("**", ""), exact=False).first.wait_for()
        settle(page)
        no_exception(page)
        shot(page, f"{transport}-{path or 'attack_lab'}")
    # the zoo lists the three models
    assert page.get_by_text("tiny-rsupcon", exact=False).count() > 0


def test_attack_lab_grid_and_controls(app_url, page):
    transport, base = app_url
    main = open_ready(page, f"{base}/?image=samples:3&models=tiny-rsupcon,tiny-ce&eps=6", "PGD, L-inf, eps 6/255")
    # 2 models x (clean, adversarial, perturbation, saliency clean, saliency adv)
    main.get_by_text("L-inf 6.0/255", exact=False).nth(1).wait_for()
    main.locator(".rl-prob").nth(2 * 2 * 5 - 1).wait_for()  # two top-5 blocks per model
    main.locator("img").nth(9).wait_for()  # the images can arrive after the text (a loaded machine)
    settle(page)
    assert main.locator(".rl-prob").count() == 2 * 2 * 5
    assert main.locator("img").count() >= 10
    assert main.get_by_text("L-inf 6.0/255", exact=False).count() == 2
    shot(page, f"{transport}-attack_lab_grid")
    # the eps slider: one step left, only the grid reruns, the URL follows
    thumb = main.get_by_role("slider").first
    thumb.focus()
    thumb.press("ArrowLeft")
    main.get_by_text("L-inf 5.0/255", exact=False).nth(1).wait_for()  # both columns redrawn
    settle(page)
    assert "eps=5" in page.url and ("image=samples%3A3" in page.url or "image=samples:3" in page.url)
    # pick another image from the sidebar browser
    page.locator('[data-testid="stSidebar"]').get_by_role("button", name="5", exact=True).click()
    page.wait_for_url("**image=samples*5*")
    settle(page)
    no_exception(page)
    shot(page, f"{transport}-attack_lab_after_controls")


def test_corruptions_view(app_url, page):
    """The chosen image under one corruption's five severities, each model's prediction and saliency;
    another corruption picked in the select box redraws the grid and the URL follows."""
    transport, base = app_url
    main = open_ready(page, f"{base}/corruptions?image=samples:3&models=tiny-rsupcon,tiny-ce&corr=fog&csal=gradcam",
                      "Clean prediction kept")
    # the images (and their captions) can arrive after the text on a loaded machine: wait for them first
    main.locator("img").nth(1 + 5 + 5 * 2).wait_for()  # clean, 5 corrupted, 10 maps, the overview
    main.get_by_text("saliency, severity 5", exact=True).nth(1).wait_for()
    settle(page)
    assert main.locator(".rl-badge").count() == 5 * 2  # a prediction per severity and model
    for s in range(1, 6):
        assert main.get_by_text(f"fog, severity {s}", exact=True).count() == 1
    assert main.get_by_text("saliency, severity 5", exact=True).count() == 2
    shot(page, f"{transport}-corruptions")
    main.locator('[data-testid="stSelectbox"]').filter(has_text="Corruption in detail").click()
    page.get_by_role("option", name="gaussian noise", exact=True).click()
    main.get_by_text("gaussian noise, severity 5", exact=True).wait_for()
    main.locator(".rl-badge").nth(5 * 2 - 1).wait_for()
    settle(page)
    no_exception(page)
    assert "corr=gaussian_noise" in page.url
    assert main.locator(".rl-badge").count() == 5 * 2


# The embedding map is a Vega-Lite chart drawn as SVG: each layer's marks are a group named after the
# layer ("clean", "twins"), one <path> per point.
CLEAN_POINTS = ".vega-embed g.clean_marks path"
TOOLTIP = "#vg-tooltip-element"


def _open_embeddings(page, base: str) -> None:
    page.goto(f"{base}/embeddings?models=tiny-rsupcon&emb_n=20&emb_pca=1")
    page.get_by_role("button", name="Compute maps").click()
    page.locator(CLEAN_POINTS).nth(19).wait_for()  # the 20 clean points
    settle(page)
    no_exception(page)


def _centre(page, selector: str, i: int = 0) -> tuple[float, float]:
    box = page.locator(selector).nth(i).bounding_box()
    return box["x"] + box["width"] / 2, box["y"] + box["height"] / 2


def test_embedding_point_opens_attack_lab(app_url, page):
    transport, base = app_url
    _open_embeddings(page, base)
    shot(page, f"{transport}-embeddings_map")
    # click one clean point. On a loaded machine a rerun can redraw the chart between measuring the point
    # and clicking it, so the click is retried (at most three times) on a freshly measured point; the page
    # must still end up in the attack lab.
    heading = page.get_by_role("heading", name="Attack lab", level=1)
    for _ in range(3):
        settle(page)
        if heading.count():  # an earlier click got there, slowly
            break
        x, y = _centre(page, CLEAN_POINTS, 3)
        page.mouse.move(x - 4, y - 4)
        page.mouse.move(x, y)
        page.wait_for_timeout(300)
        page.mouse.click(x, y)
        try:
            heading.wait_for(timeout=30_000)
            break
        except sync_api.TimeoutError:
            continue
    heading.wait_for()
    main = page.locator('[data-testid="stMain"]')
    main.get_by_text("L-inf", exact=False).first.wait_for()
    settle(page)
    no_exception(page)
    assert "image=samples" in page.url
    # the model chosen on the explorer carried over: one column
    assert main.get_by_text("Tiny rsupcon (random init)", exact=True).count() == 1
    shot(page, f"{transport}-embeddings_click_to_attack_lab")


def test_embedding_hover_shows_thumbnail_and_box_lists_images(app_url, page):
    """Hovering a clean point or a twin shows a tooltip with the image's thumbnail (an <img> of the
    32-px PNG), its id, true class and both predictions; in box mode a drag across the map lists the
    images inside with thumbnails."""
    transport, base = app_url
    _open_embeddings(page, base)
    tip = page.locator(TOOLTIP)
    for selector in (CLEAN_POINTS, ".vega-embed g.twins_marks path"):
        x, y = _centre(page, selector, 5)
        page.mouse.move(x - 6, y - 6)
        page.mouse.move(x, y)
        page.locator(f"{TOOLTIP}.visible img").wait_for(timeout=15_000)
        page.wait_for_function("() => { const i = document.querySelector('#vg-tooltip-element img');"
                               " return i && i.complete && i.naturalWidth > 0; }")
        img = page.evaluate("() => { const i = document.querySelector('#vg-tooltip-element img');"
                            " return {w: i.naturalWidth, h: i.naturalHeight, shown: i.getBoundingClientRect().width,"
                            " src: i.src.slice(0, 22)}; }")
        assert img == {"w": 32, "h": 32, "shown": 96, "src": "data:image/png;base64,"}, img
        text = tip.inner_text()
        for key in ("image id", "samples:", "true class", "clean pred", "adv pred"):
            assert key in text, (key, text)
        assert ("adversarial twin" in text) == ("twins" in selector), text
        shot(page, f"{transport}-embeddings_hover_{'twin' if 'twins' in selector else 'clean'}")
        page.mouse.move(5, 5)  # off the map: the tooltip goes
        page.wait_for_function("() => !document.querySelector('#vg-tooltip-element.visible')", timeout=10_000)
    # box mode: a drag over every point lists all 20 (the first 16 with thumbnails)
    page.get_by_text("drag a box to list several", exact=True).click()
    settle(page)
    page.locator(CLEAN_POINTS).nth(19).wait_for()
    area = page.locator(".vega-embed g.role-axis-grid").first.bounding_box()  # the plot's frame
    x0, y0 = area["x"] + 3, area["y"] + 3  # a brush starts inside the frame only
    x1, y1 = area["x"] + area["width"] - 3, area["y"] + area["height"] - 3
    page.mouse.move(x0, y0)
    page.mouse.down()
    for k in range(1, 13):  # in steps, as a hand drags (vega's brush follows pointer moves)
        page.mouse.move(x0 + (x1 - x0) * k / 12, y0 + (y1 - y0) * k / 12)
        page.wait_for_timeout(40)
    page.mouse.up()
    page.get_by_role("heading", name="20 selected images").wait_for(timeout=60_000)
    settle(page)
    no_exception(page)
    main = page.locator('[data-testid="stMain"]')
    page.wait_for_function("() => [...document.querySelectorAll('[data-testid=\"stMain\"] img')]"
                           ".filter(i => i.complete && i.naturalWidth >= 64).length >= 16")  # 64-px thumbnails
    assert main.get_by_role("button", name="3", exact=True).count() == 1  # an open button per listed image
    shot(page, f"{transport}-embeddings_box_selection")


# ---- layout with the five shipped models, at two widths ----------------------------------------
SHIPPED = REPO / "checkpoints"
LAYOUT_WIDTHS = (1440, 1024)
# url path + query -> (h1, the button that starts the page's work or None, text shown once it is done)
LAYOUT_PAGES = {
    "attack_lab": ("", "Attack lab", None, "L-inf 8.0/255 |"),
    "saliency_studio": ("saliency_studio?sal_methods=gradient,gradcam&attack=fgsm", "Saliency studio", None,
                        "drift rho"),
    "embeddings": ("embeddings?emb_n=50&emb_pca=1", "Embedding explorer", "Compute maps", "predictions flipped"),
    "robustness": ("robustness?rob_methods=fgsm&rob_eps=0,8&rob_n=20", "Robustness", "Run", "Flip matrix"),
    "feature_lens": ("feature_lens?lens_steps=5&lens_vis_steps=5", "Feature lens", "Run the lens", "from noise: p="),
    "corruptions": ("corruptions?corr=fog", "Corruptions", None, "Clean prediction kept"),
    "lesson_hold": ("lesson?step=hold", "Lesson", None, "adversarially trained model(s)"),
    "lesson_embedding": ("lesson?step=embedding", "Lesson", None, "Changed predictions of 20 images"),
    "train": ("train", "Train", None, "No jobs yet"),
    "zoo": ("zoo", "Model zoo", None, "Comparison"),
}
# Every visible element of the main area and the sidebar must end inside the viewport; two pictures
# (img elements) must not overlap. Plotly's, Vega's and the data grid's internals are drawn and clipped
# by their own libraries, so only their outer boxes are checked.
LAYOUT_JS = """() => {
  const vw = document.documentElement.clientWidth, bad = [], imgs = [];
  const inner = el => el.closest('.js-plotly-plot .main-svg, .js-plotly-plot .modebar, .vega-embed svg *, [data-testid="stDataFrame"] canvas, .dvn-scroller, .gdg-overlay, [data-testid="stDataFrameResizable"] > div > div, [role="tooltip"]');
  for (const el of document.querySelectorAll('[data-testid="stMain"] *, [data-testid="stSidebar"] *')) {
    const r = el.getBoundingClientRect();
    if (r.width < 1 || r.height < 1 || inner(el)) continue;
    const cs = getComputedStyle(el);
    if (cs.visibility === 'hidden' || cs.display === 'none') continue;
    if (r.right > vw + 1 || r.left < -1) bad.push(`${el.tagName}.${el.className && el.className.baseVal === undefined ? el.className : ''} [${el.getAttribute('data-testid') || ''}] ${Math.round(r.left)}..${Math.round(r.right)} > ${vw}`);
    if (el.tagName === 'IMG') imgs.push([r, el.getAttribute('alt') || el.src.slice(-24)]);
  }
  const overlaps = [];
  for (let i = 0; i < imgs.length; i++) for (let j = i + 1; j < imgs.length; j++) {
    const [a] = imgs[i], [b] = imgs[j];
    const w = Math.min(a.right, b.right) - Math.max(a.left, b.left), h = Math.min(a.bottom, b.bottom) - Math.max(a.top, b.top);
    if (w > 1 && h > 1) overlaps.push(`${Math.round(a.left)},${Math.round(a.top)} x ${Math.round(b.left)},${Math.round(b.top)}`);
  }
  return {vw, scroll: document.documentElement.scrollWidth, bad: bad.slice(0, 12), nbad: bad.length,
          overlaps: overlaps.slice(0, 12), nimg: imgs.length};
}"""


# The Feature lens's pictures by row (the caption's first words) -> the top of each picture, in px.
LENS_ROWS_JS = """() => { const rows = {};
  for (const im of document.querySelectorAll('[data-testid="stMain"] [data-testid="stImage"]')) {
    const cap = (im.parentElement.innerText || '').trim();
    const kind = ['toward', 'from noise', 'change'].find(k => cap.startsWith(k) || cap.includes('\\n' + k));
    const img = im.querySelector('img');
    if (!kind || !img) continue;
    (rows[kind] = rows[kind] || []).push(Math.round(img.getBoundingClientRect().top));
  }
  return rows; }"""


@pytest.fixture(scope="module")
def five_model_app(tmp_path_factory):
    """The app on a copy of the five shipped checkpoints (cpu-preview cards with measured accuracy),
    the offline samples only, in-process backend."""
    import shutil

    if len([p for p in SHIPPED.iterdir() if (p / "card.json").exists()]) < 5:
        pytest.skip("needs the five shipped checkpoints in checkpoints/")
    tmp = tmp_path_factory.mktemp("browser_five")
    ckpt = tmp / "ckpt"
    shutil.copytree(SHIPPED, ckpt, ignore=shutil.ignore_patterns(".jobs", "job-*", "__pycache__"))
    with app_server(ckpt, tmp) as url:
        yield url


def _check_layout(pg, name: str, width: int) -> None:
    """The page as laid out at `width` px: as tall as its content (so the screenshot shows all of it and
    everything is laid out for the checks), nothing past the viewport's edge, no two pictures overlapping,
    every model chip visible, the Feature lens's rows level, every model's status and AutoAttack number."""
    pg.set_viewport_size({"width": width, "height": 1000})
    settle(pg)
    tall = pg.evaluate("() => document.querySelector('[data-testid=\"stMain\"]').scrollHeight")
    pg.set_viewport_size({"width": width, "height": max(1000, min(int(tall) + 40, 8000))})
    settle(pg)
    pg.wait_for_function("() => [...document.querySelectorAll('[data-testid=\"stMain\"] img')]"
                         ".every(i => i.complete && i.naturalWidth > 0)")
    pg.wait_for_timeout(500)  # plots laid out again
    shot(pg, f"layout-{width}-{name}")
    lay = pg.evaluate(LAYOUT_JS)
    assert lay["scroll"] <= lay["vw"] + 1, (name, width, "page scrolls sideways", lay)
    assert not lay["nbad"], (name, width, lay["bad"])
    assert not lay["overlaps"], (name, width, lay["overlaps"])
    chips = pg.evaluate("""() => { const ms = document.querySelector('[data-testid="stMultiSelect"]');
        if (!ms) return null; const box = ms.getBoundingClientRect();
        const labels = [...ms.querySelectorAll('span')].filter(e => !e.children.length && e.textContent.includes(' · '));
        return labels.map(t => { const r = t.getBoundingClientRect();
          return r.top >= box.top - 1 && r.bottom <= box.bottom + 1; }); }""")
    if chips is not None and name != "train":
        assert len(chips) >= 5 and all(chips), (name, width, "a model chip is hidden", chips)
    if name == "feature_lens":  # issue 20, finding 10: each row of pictures starts at one height
        rows = pg.evaluate(LENS_ROWS_JS)
        assert set(rows) == {"toward", "change", "from noise"}, rows
        for kind, tops in rows.items():
            assert len(tops) == 5 and max(tops) - min(tops) <= 1, (width, kind, tops)
    if name in ("attack_lab", "saliency_studio", "feature_lens"):
        main_text = pg.locator('[data-testid="stMain"]').inner_text()
        assert main_text.count("cpu-preview") >= 5 and main_text.count("AutoAttack") >= 5, name


def test_layout_with_five_models(five_model_app, browser):
    """Every page with the five shipped models, laid out at each of LAYOUT_WIDTHS px (each page's work is
    done once; the window is then resized, which lays the page out again without a rerun): no element past
    the viewport's edge, no two pictures overlapping, no request to a host other than the app's (the app
    works offline), every model's measured accuracy and status beside its name; a full-page screenshot
    per page and width."""
    ctx = browser.new_context(viewport={"width": LAYOUT_WIDTHS[0], "height": 1000})
    pg = ctx.new_page()
    pg.set_default_timeout(RENDER_S * 1000)
    outside = []
    pg.on("request", lambda r: outside.append(r.url) if not r.url.startswith(
        (five_model_app, "data:", "blob:", "about:", "ws://127.0.0.1", "http://127.0.0.1", "http://localhost"))
        else None)
    try:
        for name, (path, title, button, done) in LAYOUT_PAGES.items():
            pg.set_viewport_size({"width": LAYOUT_WIDTHS[0], "height": 1000})
            pg.goto(f"{five_model_app}/{path}")
            pg.get_by_role("heading", name=title, level=1).wait_for()
            settle(pg)
            if button:
                pg.get_by_role("button", name=button, exact=True).click()
            pg.locator('[data-testid="stMain"]').get_by_text(done, exact=False).first.wait_for()
            settle(pg)
            no_exception(pg)
            for width in LAYOUT_WIDTHS:
                _check_layout(pg, name, width)
            no_exception(pg)
        assert not outside, outside[:10]
    finally:
        ctx.close()


@pytest.mark.parametrize("path,button,done", [
    ("feature_lens?models=tiny-rsupcon,tiny-ce&lens_steps=4&lens_vis_steps=3", "Run the lens", "from noise: p="),
    ("embeddings?models=tiny-pgd,tiny-ce&emb_n=10&emb_pca=1", "Compute maps", "predictions flipped"),
])
def test_a_teachers_link_shows_results_in_a_second_browser(app_url, browser, path, button, done):
    """Issue 20, finding 6: the teacher runs an analysis; a second browser context opening the URL the
    teacher's page shows gets the results without pressing anything, from the service's cache."""
    transport, base = app_url
    teacher, student = (browser.new_context(viewport={"width": 1440, "height": 1400}) for _ in range(2))
    try:
        pg = teacher.new_page()
        pg.set_default_timeout(RENDER_S * 1000)
        pg.goto(f"{base}/{path}")
        settle(pg)
        pg.get_by_role("button", name=button, exact=True).click()
        main = pg.locator('[data-testid="stMain"]')
        main.get_by_text(done, exact=False).first.wait_for()
        pg.wait_for_function("() => location.search.includes('run=1')")
        link = pg.url
        st_pg = student.new_page()
        st_pg.set_default_timeout(RENDER_S * 1000)
        t0 = time.monotonic()
        st_pg.goto(link)
        st_pg.locator('[data-testid="stMain"]').get_by_text(done, exact=False).first.wait_for()
        took = time.monotonic() - t0  # reported, not asserted (tests never assert wall-clock times)
        settle(st_pg)
        no_exception(st_pg)
        assert "run=1" in st_pg.url
        shot(st_pg, f"{transport}-link-{path.split('?')[0]}")
        print(f"{transport} {path.split('?')[0]}: the student's page showed results {took:.1f} s after opening")
    finally:
        teacher.close()
        student.close()


# Each Lesson step -> a text its view shows once computed (tests/test_app_pages.py checks the same per step)
LESSON = [("fool", "before,"), ("hold", "adversarially trained model(s)"), ("change", ", L2 "),
          ("looks", "scaled to its own brightest pixel"), ("embedding", "Changed predictions of 20 images"),
          ("draws", " steps.")]


def test_lesson_walk_end_to_end(app_url, page):
    """The teacher presses Next through the Lesson: each step's view and its step name in the URL; then
    a second browser context opening the teacher's link lands on the same step with its view."""
    transport, base = app_url
    page.goto(f"{base}/lesson?image=samples:2")
    page.get_by_role("heading", name="Lesson", level=1).wait_for()
    main = page.locator('[data-testid="stMain"]')
    for i, (key, text) in enumerate(LESSON):
        main.get_by_text(text, exact=False).first.wait_for()
        settle(page)
        no_exception(page)
        assert f"step={key}" in page.url and "image=samples%3A2" in page.url.replace(":", "%3A")
        shot(page, f"{transport}-lesson-{i + 1}-{key}")
        if i < len(LESSON) - 1:
            main.get_by_role("button", name="Next").click()
    ctx = page.context.browser.new_context(viewport={"width": 1440, "height": 1400})
    try:
        other = ctx.new_page()
        other.set_default_timeout(RENDER_S * 1000)
        other.goto(page.url)
        other.locator('[data-testid="stMain"]').get_by_text(LESSON[-1][1], exact=False).first.wait_for()
        settle(other)
        no_exception(other)
        other.locator('[data-testid="stMain"] .js-plotly-plot').first.wait_for()  # the path chart
        assert other.locator('[data-testid="stMain"] .js-plotly-plot').count() == 1
    finally:
        ctx.close()
