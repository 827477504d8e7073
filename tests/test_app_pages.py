"""Every page of the Streamlit app, driven by streamlit.testing.v1.AppTest against the REAL in-process
backend: three tiny random-init width-16 checkpoints in a temporary folder, the 20 offline sample
images only (RSUPCON_DATA points at an empty folder), training jobs on synthetic data.

Each test checks that the page renders without an exception or error message and that its main
controls do what they say (numbers and images appear, the URL follows the state, long work can be
cancelled, bad input becomes a readable error)."""
from __future__ import annotations

import json
import re
import socket
import time
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from tests.helpers import CIFAR10_CLASSES, TINY_MODELS, app_environment, write_tiny_models

MAIN = str(Path(__file__).resolve().parent.parent / "app" / "main.py")
TIMEOUT = 180  # seconds per script run: a cold start loads torch, captum and three models
MODEL_IDS = ["tiny-rsupcon", "tiny-pgd", "tiny-ce"]  # the registry order: rsupcon first, ce last


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """Checkpoints with the three tiny models, no data set (offline samples only), synthetic job data."""
    root = tmp_path_factory.mktemp("app_ckpt")
    write_tiny_models(root)
    with app_environment(root, tmp_path_factory.mktemp("no_data")):
        yield root


def open_page(page: str | None = None, query: dict | None = None) -> AppTest:
    at = AppTest.from_file(MAIN, default_timeout=TIMEOUT)
    if query:
        at.query_params.update(query)
    if page:  # open the page directly, as a link to it would
        at.switch_page(page)
    return at.run()


def ok(at: AppTest) -> AppTest:
    """No exception and no error message on the page."""
    assert not at.exception, [e.message for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    return at


def run_until(at: AppTest, done, what: str, limit_s: float = 120) -> AppTest:
    """Rerun the script (as the polling fragment would) until done(at); bounded."""
    deadline = time.monotonic() + limit_s
    while True:
        at.run()
        if done(at):
            return at
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.25)


def texts(at: AppTest) -> str:
    return "\n".join([m.value for m in at.markdown] + [c.value for c in at.caption])


def html_text(at: AppTest) -> str:
    return "\n".join(h.value for h in at.html)


def captions(at: AppTest) -> list[str]:
    """Captions of the images in the main area."""
    return [c for im in at.main.image for c in im.captions]


def norms(at: AppTest) -> list[str]:
    """The per-model norm captions of the attack grid, e.g. ['L-inf 8.0/255 | L2 1.627 | 10 it.']."""
    return [c.value for c in at.caption if re.match(r"L-inf [0-9.]+/255 \| L2", c.value)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---- attack lab ---------------------------------------------------------------------------------
def test_attack_lab_renders_grid_for_every_model(env):
    at = ok(open_page())
    assert at.title[0].value == "Attack lab"
    assert at.session_state["p_models"] == MODEL_IDS  # default: every model, rsupcon first
    body = texts(at)
    for cid in MODEL_IDS:
        assert f"Tiny {dict((m[0], m[1]) for m in TINY_MODELS)[cid]} (random init)" in body
    # clean, adversarial, perturbation, two saliency maps per model, plus the sidebar's picks
    assert len(at.main.image) >= 5 * len(MODEL_IDS)
    assert "PGD, L-inf, eps 8/255, 10 steps" in body
    assert [n.split(" |")[0] for n in norms(at)] == ["L-inf 8.0/255"] * len(MODEL_IDS)  # PGD uses its budget
    assert html_text(at).count("rl-prob") == 2 * 5 * len(MODEL_IDS)  # two top-5 bar blocks per model
    assert at.query_params["image"] in default_sample_by_rule(MODEL_IDS) and at.query_params["eps"] == "8"



def test_attack_lab_pictures_are_encoded_once_for_every_session(env, monkeypatch):
    """Issue 21: a class looking at the same attack made the Streamlit server encode every picture again
    for every student and rerun (st.image of an array: a 40 kB JPEG each time). The pictures are now
    PNGs encoded once by content (imaging.display_png): a second session showing the same view, and a
    rerun of the first, encode nothing new."""
    from app.widgets import imaging

    encoded = []
    real = imaging._png
    monkeypatch.setattr(imaging, "_png", lambda im: encoded.append(im.size) or real(im))
    monkeypatch.setattr(imaging, "_png_cache", type(imaging._png_cache)())
    monkeypatch.setattr(imaging, "_png_bytes", [0])
    first = ok(open_page(query={"image": "samples:3"}))
    n_first = len(encoded)
    assert n_first >= 5 * len(MODEL_IDS) and (160, 160) in encoded and (64, 64) in encoded  # grid and thumbnails
    second = ok(open_page(query={"image": "samples:3"}))  # another student, same view
    assert len(second.main.image) == len(first.main.image)
    first.run()
    assert len(encoded) == n_first, encoded[n_first:]

def default_sample_by_rule(model_ids: list[str]) -> set[str]:
    """The documented default (app.honesty): the first offline sample every compared model gets right
    when clean; else one of those that the most models get right (the set of allowed ids). Computed
    here on the backend."""
    from backend.transport.client import make_client

    c = make_client()
    items = c.list_images("samples", None, 0, 20)["items"]
    right = []
    for it in items:
        res = c.predict(it["image_id"], model_ids)["results"]
        right.append(sum(int(res[m]["pred"]) == it["label"] for m in model_ids))
    if max(right) == len(model_ids):
        return {items[right.index(len(model_ids))]["image_id"]}
    return {it["image_id"] for it, r in zip(items, right) if r == max(right)}


def test_attack_lab_controls_rerun_the_grid(env):
    at = ok(open_page())
    at.slider(key="w_eps").set_value(2).run()
    ok(at)
    assert "eps 2/255" in texts(at) and "L-inf 2.0/255" in texts(at)
    assert at.query_params["eps"] == "2"
    at.multiselect(key="w_models").set_value(["tiny-ce"]).run()
    ok(at)
    assert at.query_params["models"] == "tiny-ce"
    assert len(norms(at)) == 1
    at.selectbox(key="w_attack").set_value("fgsm").run()
    ok(at)
    assert "FGSM (one step, L-inf), eps 2/255" in texts(at) and "| 1 it." in texts(at)
    at.selectbox(key="w_sal").set_value("none").run()
    assert len(ok(at).main.image) == 3  # clean, adversarial, perturbation


def test_attack_lab_transfer_targeted_and_minimal_attacks(env):
    at = ok(open_page())
    at.radio(key="w_mode").set_value("transfer").run()
    at.selectbox(key="w_source").set_value("tiny-ce").run()
    ok(at)
    crafted = [c.value for c in at.caption if c.value.startswith("adversarial image crafted on")]
    assert crafted == ["adversarial image crafted on Tiny ce (random init)"] * 2  # the other two columns
    at.checkbox(key="w_targeted").check().run()
    at.selectbox(key="w_target").set_value(3).run()
    ok(at)
    assert "targeted -> cat" in texts(at)
    at.radio(key="w_mode").set_value("whitebox").run()
    at.selectbox(key="w_attack").set_value("deepfool").run()
    ok(at)
    assert "DeepFool (L2, minimal), 50 steps" in texts(at)


def test_attack_lab_state_comes_from_the_url(env):
    at = ok(open_page(query={"image": "samples:7", "models": "tiny-pgd,tiny-ce", "eps": "4",
                             "attack": "pgd", "sal": "gradcam"}))
    assert at.session_state["p_image"] == "samples:7"
    assert at.session_state["p_models"] == ["tiny-pgd", "tiny-ce"]
    assert "eps 4/255" in texts(at) and [n.split(" |")[0] for n in norms(at)] == ["L-inf 4.0/255"] * 2
    assert at.selectbox(key="w_sal").value == "gradcam"
    # a stale or malformed link falls back to defaults instead of breaking the page
    at2 = ok(open_page(query={"image": "samples:7", "models": "gone-model", "eps": "abc", "attack": "nope"}))
    assert at2.session_state["p_models"] == MODEL_IDS and "PGD, L-inf, eps 8/255" in texts(at2)


def test_image_picker_browse_random_and_upload(env):
    at = ok(open_page())
    at.button(key="pick_samples:5").click().run()
    ok(at)
    assert at.session_state["p_image"] == "samples:5" and at.query_params["image"] == "samples:5"
    at.selectbox(key="w_cls").set_value("cat").run()
    at.button(key="pick_random").click().run()
    ok(at)
    img_id = at.session_state["p_image"]
    assert img_id.startswith("samples:")
    at.radio(key="w_src").set_value("upload").run()
    import io

    from PIL import Image
    buf = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 30, 30)).save(buf, format="PNG")
    at.file_uploader(key="upload").upload("red.png", buf.getvalue(), "image/png").run()
    ok(at)
    assert at.session_state["p_image"].startswith("upload:")
    # a file that is not an image: a clear error, the page keeps working
    at.file_uploader(key="upload").upload("bad.png", b"not an image at all", "image/png").run()
    assert not at.exception and at.error and "image" in at.error[0].value.lower()
    assert at.title[0].value == "Attack lab"


def test_sessions_do_not_share_state(env):
    default = default_sample_by_rule(MODEL_IDS)
    other = "samples:7" if "samples:7" not in default else "samples:8"
    a = ok(open_page(query={"image": other}))
    b = ok(open_page())
    a.slider(key="w_eps").set_value(1).run()
    assert a.session_state["p_image"] == other and b.session_state["p_image"] in default
    b.run()
    assert b.slider(key="w_eps").value == 8


def test_zero_models_and_backend_down(env, tmp_path, monkeypatch):
    monkeypatch.setenv("ROBUSTLENS_CHECKPOINTS", str(tmp_path / "empty"))
    image_pages = (None, "views/corruptions.py", "views/saliency_studio.py", "views/feature_lens.py",
                   "views/lesson.py")
    for page in image_pages + ("views/zoo.py", "views/embeddings.py", "views/robustness.py"):
        at = ok(open_page(page))
        assert any("No models are installed" in w.value for w in at.warning)
        if page in image_pages:  # the picked image is still shown (the app browses images without models)
            assert at.get("image"), page
    monkeypatch.setenv("BACKEND_URL", f"http://127.0.0.1:{free_port()}")
    at = open_page()
    assert not at.exception
    assert at.error and "not reachable" in at.error[0].value


# ---- the other pages ----------------------------------------------------------------------------
def test_zoo_page(env):
    at = ok(open_page("views/zoo.py"))
    assert at.title[0].value == "Model zoo"
    df = at.dataframe[0].value
    assert list(df["model"]) == MODEL_IDS and "status" in df and "clean" in df
    body = texts(at)
    assert all(f"blue-badge[{m}]" in body for m in ("rsupcon", "pgd_at", "ce"))  # each card names its method
    assert "not measured" in texts(at)


def test_saliency_studio_grid_metrics_and_sanity(env):
    at = open_page("views/saliency_studio.py", query={"models": "tiny-ce,tiny-pgd", "sal_methods": "gradient,gradcam",
                                                      "attack": "fgsm"})
    ok(at)
    assert at.title[0].value == "Saliency studio"
    # the input once, each model's clean and adversarial image, then methods x models x (clean, adv) maps
    assert len(at.main.image) == 1 + 2 * 2 + 2 * 2 * 2
    assert "input" in captions(at)
    # issue 20, finding 7: the alignment is the model's (one per model column), not repeated per method row
    assert texts(at).count("align ") == 0 and texts(at).count("gradient-image alignment ") == 2
    assert texts(at).count("drift rho") == 4
    # issue 20, finding 1: where Grad-CAM undercuts the story, the page says why (coarse layer, not robustness)
    assert "Grad-CAM weighs the last convolutional stage" in texts(at) and "not whether it is robust" in texts(at)
    assert html_text(at).count("rl-colourbar") == 2 and "per map" in html_text(at)  # one bar per method
    at.radio(key="w_sal_scale").set_value("shared").run()
    ok(at)
    assert html_text(at).count("shared scale") == 2 and at.query_params["sal_scale"] == "shared"
    # issue 20, finding 2: why a robust model's maps go dark on the shared scale, and by how much
    assert "sets the top" in texts(at) and texts(at).count("of the shared top") == 4
    peaks = [float(x) for x in re.findall(r"peak (\d+)% of the shared top", texts(at))]
    assert max(peaks) == 100 and all(0 <= p <= 100 for p in peaks)
    at.button(key="sanity_run").click().run()
    ok(at)
    assert at.session_state["sanity"]["key"][1] == "tiny-pgd"  # the first chosen model in registry order
    assert len(at.session_state["sanity"]["res"]["similarity"]) == len(at.session_state["sanity"]["res"]["stages"])


def test_embedding_explorer_task_and_maps(env):
    at = ok(open_page("views/embeddings.py"))
    at.slider(key="w_emb_n").set_value(20)
    at.toggle(key="w_emb_pca").set_value(True)
    at.form_submit_button[0].click().run()
    ok(at)
    run_until(at, lambda a: not (a.session_state["emb_queue"]["state"] == "running"), "the embedding tasks")
    ok(at)
    q = at.session_state["emb_queue"]
    assert q["state"] == "done" and set(q["results"]) == set(MODEL_IDS)
    res = q["results"]["tiny-rsupcon"]
    assert res["coords_clean"].shape == (20, 2) and res["coords_adv"].shape == (20, 2)
    maps = at.get("vega_lite_chart")  # Vega-Lite maps (their tooltips can show a picture), no Plotly
    assert len(maps) == len(MODEL_IDS) and not at.get("plotly_chart")
    assert "20 sample images, PCA, FGSM (one step, L-inf), eps 8/255" in texts(at)
    # issue 20, finding 8: the caption promised clusters the small models' maps do not show
    assert "inside their class cluster" not in texts(at) and "compare segment lengths" in texts(at)
    spec, table = vega_chart(maps[0])
    layers = {lay.get("name"): lay for lay in spec["layer"]}
    assert set(layers) >= {"clean", "twins"} and len(spec["layer"]) == 3  # segments, clean points, twins
    # default mouse: a click on a clean point or a twin picks its row (and opens it); no box
    picks = [p for p in spec["params"] if "bind" not in p]
    assert [(p["name"], p["select"]["type"], p["select"]["fields"], p["views"]) for p in picks] == \
        [("pick", "point", ["row"], ["clean"]), ("pick_twin", "point", ["row"], ["twins"])]
    assert list(maps[0].proto.selection_mode) == ["pick", "pick_twin"]
    # the tooltip: the image's thumbnail (vega-tooltip shows a field named "image" as a picture), its id,
    # true class and both predictions; one data row per image, in the result's order
    for name in ("clean", "twins"):
        tips = [t["field"] for t in layers[name]["encoding"]["tooltip"]]
        assert tips == ["image", "image id", "true class", "clean pred", "adv pred", "point"], (name, tips)
    assert table["image id"].tolist() == list(res["image_ids"]) and table["row"].tolist() == list(range(20))
    import base64
    import io

    from PIL import Image

    from app.widgets.imaging import class_colour
    for iid, uri in zip(table["image id"], table["image"]):
        assert uri.startswith("data:image/png;base64,") and len(uri) < 2500  # small: 32 px, 64 colours
        thumb = np.asarray(Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))).convert("RGB"))
        assert thumb.shape == (32, 32, 3)
        assert np.abs(thumb.astype(int) - client_pixels(iid).astype(int)).mean() < 12, iid  # that image
    # classes take the data set's colours; twins black (flipped) and dark grey (same), no class colour
    scale = layers["clean"]["encoding"]["color"]["scale"]
    present = sorted({int(k) for k in res["labels"]})
    assert scale == {"domain": [CIFAR10_CLASSES[k] for k in present],
                     "range": [class_colour(k, 10, "cifar10") for k in present]}
    from app.widgets.charts import FLIP_COLOUR, SAME_COLOUR
    from app.widgets.imaging import CLASS_COLOURS
    assert FLIP_COLOUR not in CLASS_COLOURS and SAME_COLOUR not in CLASS_COLOURS
    assert layers["twins"]["encoding"]["stroke"]["scale"]["range"] == [FLIP_COLOUR, SAME_COLOUR]
    at.radio(key="w_emb_mouse").set_value("box").run()
    ok(at)
    spec, _ = vega_chart(at.get("vega_lite_chart")[0])  # drag = box select at once, no pan
    assert [(p["name"], p["select"]["type"], p.get("bind")) for p in spec["params"]] == [("box", "interval", None)]
    assert list(at.get("vega_lite_chart")[0].proto.selection_mode) == ["box"]


def vega_chart(el) -> tuple:
    """(spec, the data table as a pandas DataFrame) of an st.altair_chart element in an AppTest."""
    import json

    from streamlit.dataframe_util import convert_arrow_bytes_to_pandas_df

    spec = json.loads(el.proto.spec)
    tables = [convert_arrow_bytes_to_pandas_df(d.data.data) for d in el.proto.datasets]
    assert len(tables) == 1, "one data set shared by every layer"
    return spec, tables[0]


def client_pixels(image_id: str):
    from backend.core.data import sample_images

    split = sample_images("cifar10")
    return split.images[int(image_id.split(":")[1])].numpy()


def teacher_then_student(page: str, query: dict, queue: str) -> tuple[AppTest, dict, AppTest]:
    """A teacher opens `page` with `query` (no run=1 yet), presses its form's button and waits for the task
    queue `queue` to finish; a student then opens the teacher's URL (which now carries run=1) and waits
    (20 s at most: the answers are cached). Returns (teacher, the link, student)."""
    teacher = ok(open_page(page, query=query))
    assert "run" not in teacher.query_params
    teacher.form_submit_button[0].click().run()
    run_until(teacher, lambda a: a.session_state[queue]["state"] != "running", "the teacher's results")
    ok(teacher)
    link = dict(teacher.query_params)
    assert link["run"] == "1"
    student = ok(open_page(page, query=link))
    run_until(student, lambda a: a.session_state[queue]["state"] != "running", "the student's results", 20)
    return teacher, link, ok(student)


def test_an_embedding_link_shows_its_maps_without_compute(env):
    """Issue 20, finding 6: the teacher computes maps; a second session opening the page's URL gets them
    at once from the service's cache, without pressing Compute maps."""
    teacher, link, student = teacher_then_student(
        "views/embeddings.py", {"models": "tiny-pgd,tiny-ce", "emb_n": "10", "emb_pca": "1", "emb_seed": "3"},
        "emb_queue")
    got, want = student.session_state["emb_queue"]["results"], teacher.session_state["emb_queue"]["results"]
    assert set(got) == {"tiny-pgd", "tiny-ce"}
    assert all(np.array_equal(got[m]["coords_clean"], want[m]["coords_clean"]) for m in got)
    assert len(student.get("vega_lite_chart")) == 2
    # the test set is not installed here: a link to maps of it says so and computes nothing (no silent switch)
    other = ok(open_page("views/embeddings.py", query={**link, "emb_src": "test"}))
    assert any("test set, which this server does not have" in w.value for w in other.warning)
    assert "emb_queue" not in other.session_state


def test_a_robustness_link_shows_its_curves_without_run(env):
    q = {"models": "tiny-ce", "rob_methods": "fgsm", "rob_eps": "0,4", "rob_n": "10", "rob_seed": "2"}
    teacher = ok(open_page("views/robustness.py", query=q))
    teacher.form_submit_button[0].click().run()
    run_until(teacher, lambda a: a.session_state["curve_queue"]["state"] != "running", "the teacher's curve")
    link = dict(ok(teacher).query_params)
    assert link["run"] == "1"
    student = ok(open_page("views/robustness.py", query=link))
    run_until(student, lambda a: a.session_state["curve_queue"]["state"] != "running", "the student's curve", 20)
    ok(student)
    got = student.session_state["curve_queue"]["results"]["fgsm"]["tiny-ce"]["accuracy"]
    assert list(got) == list(teacher.session_state["curve_queue"]["results"]["fgsm"]["tiny-ce"]["accuracy"])
    assert len(student.get("plotly_chart")) == 3  # curves, the flip matrix, per class


def test_embedding_selection_rows():
    """What a map's selection state means: the picked rows, or the images whose clean point or twin
    lies inside the box (either corner first)."""
    from types import SimpleNamespace as NS

    from app.widgets.charts import embedding_selection, rows_in_box
    res = {"coords_clean": np.array([[0.0, 0.0], [1.0, 1.0], [5.0, 5.0]]),
           "coords_adv": np.array([[9.0, 9.0], [1.2, 1.2], [0.5, 0.4]])}
    assert rows_in_box(res, [0.6, -0.1], [1.1, -0.1]) == [0, 2]  # 0 by its clean point, 2 by its twin
    assert rows_in_box(res, [0.9, 1.1], [0.9, 1.1]) == [1]
    assert rows_in_box({**res, "coords_adv": None}, [0, 1], [0, 0.5]) == [0]
    assert rows_in_box(res, None, [0, 1]) == [] and rows_in_box(res, [], []) == []
    assert embedding_selection(NS(selection={"box": {"x": [8, 10], "y": [8, 10]}}), True, res) == [0]
    assert embedding_selection(NS(selection={"box": {}}), True, res) == []
    assert embedding_selection(NS(selection={"pick": [{"row": 2}, {"row": 2}]}), False, res) == [2]
    assert embedding_selection(NS(selection={"pick": [], "pick_twin": [{"row": 1}]}), False, res) == [1]  # a twin
    assert embedding_selection(NS(selection={"pick": [{"row": 2}]}), True, res) == []  # another mode's state
    assert embedding_selection(None, False, res) == []


def test_robustness_curves_and_cancel(env):
    at = ok(open_page("views/robustness.py", query={"rob_methods": "fgsm", "rob_eps": "0,8", "rob_n": "10"}))
    at.form_submit_button[0].click().run()
    run_until(at, lambda a: a.session_state["curve_queue"]["state"] != "running", "the FGSM curve")
    ok(at)
    res = at.session_state["curve_queue"]["results"]["fgsm"]
    assert set(res) == set(MODEL_IDS)
    for c in res.values():
        assert c["n"] == 10 and len(c["accuracy"]) == 2 and c["accuracy"][1] <= c["accuracy"][0]
        assert int(c["flip_matrix"].sum()) == 10
    assert len(at.get("plotly_chart")) == 1 + len(MODEL_IDS) + 1  # curves, a flip matrix per model, per class
    header = next(m.value for m in at.markdown if m.value.startswith("**10 sample images"))  # not "samples images"
    assert "FGSM" in header and "PGD" not in header  # an FGSM-only run does not claim PGD steps
    # a long PGD run, cancelled from its progress bar
    at.multiselect(key="w_rob_methods").set_value(["pgd"])
    at.multiselect(key="w_rob_eps").set_value([1, 2, 3, 4, 6, 8, 10, 12, 16, 24, 32])
    at.number_input(key="w_rob_steps").set_value(50)
    at.slider(key="w_rob_n").set_value(20)
    at.form_submit_button[0].click().run()
    assert at.session_state["curve_queue"]["state"] == "running"
    # the progress bar names the attack as the menus do ("fgsm" in lower case before: issue 20, finding 10)
    assert at.session_state["curve_queue"]["current"]["title"] not in ("pgd", "fgsm")
    at.button(key="cancel_curve_queue").click().run()
    assert not at.exception
    assert at.session_state["curve_queue"]["state"] == "cancelled"
    assert any("Cancelled" in w.value for w in at.warning)


def test_corruptions_page_shows_every_corruption_and_each_models_view(env):
    at = ok(open_page("views/corruptions.py", query={"corr": "gaussian_noise", "csal": "gradcam"}))
    assert at.title[0].value == "Corruptions"
    caps = captions(at)
    assert [c for c in caps if c.startswith("gaussian noise, severity")] == [
        f"gaussian noise, severity {s}" for s in range(1, 6)]
    assert sum(c.startswith("saliency, severity") for c in caps) == 5 * len(MODEL_IDS)  # a map per model and severity
    badges = [h for h in html_text(at).split("rl-badge")[1:]]
    assert len(badges) == 5 * len(MODEL_IDS) and all(("held: " in b) != ("changed: " in b) for b in badges)
    # the overview: every corruption x every model, a mark per severity, the shade counting the o's
    held = json.loads(next(p for p in at.get("plotly_chart") if "held at" in p.proto.spec).proto.spec)["data"][0]
    assert len(held["y"]) == 15 and len(held["x"]) == len(MODEL_IDS) and len(held["text"]) == 15
    assert all(len(v) == 5 and set(v) <= {"o", "x"} for row in held["text"] for v in row)
    assert all(z == v.count("o") for zs, vs in zip(held["z"], held["text"]) for z, v in zip(zs, vs))
    assert any(c.startswith("clean, then severities 1-5") for c in caps)
    assert at.query_params["corr"] == "gaussian_noise" and at.query_params["csal"] == "gradcam"
    # another corruption, saliency off: the detail grid follows
    at.selectbox(key="w_corr").set_value("fog")
    at.selectbox(key="w_csal").set_value("none")
    at.run()
    ok(at)
    caps = captions(at)
    assert [c for c in caps if c.startswith("fog, severity")] == [f"fog, severity {s}" for s in range(1, 6)]
    assert not any(c.startswith("saliency, severity") for c in caps)
    assert at.query_params["corr"] == "fog"


def test_robustness_page_corruption_curves(env):
    at = ok(open_page("views/robustness.py", query={"cor_group": "digital", "cor_n": "10"}))
    assert any("Run corruptions" in b.label for b in at.form_submit_button)
    at.form_submit_button[1].click().run()  # the second form: corruptions
    run_until(at, lambda a: a.session_state["corruption_queue"]["state"] != "running", "the corruption curves")
    ok(at)
    res = at.session_state["corruption_queue"]["results"]["corruptions"]
    assert set(res) == set(MODEL_IDS)
    for c in res.values():
        assert c["n"] == 10 and c["severities"] == [0, 1, 2, 3, 4, 5]
        assert list(c["accuracy"]) == ["contrast", "elastic_transform", "pixelate", "jpeg_compression"]
    chart = next(p for p in at.get("plotly_chart") if "severity" in str(p.proto.spec))
    assert chart is not None
    assert any(m.value.startswith("**10 samples images, seed 0** - mean accuracy") for m in at.markdown)


def test_zoo_compares_mca_and_mauroc(env, tmp_path, monkeypatch):
    import json
    import shutil

    root = tmp_path / "ckpt"
    shutil.copytree(env, root)
    card_path = root / "tiny-pgd" / "card.json"
    card = json.loads(card_path.read_text())
    card["metrics"] = {**(card.get("metrics") or {}), "clean": 0.5, "mca": 0.4123, "n_mca": 1000, "mauroc": 0.6789,
                       "corruptions": {"n": 1000, "variant": "regenerated: backend.core.corruptions"},
                       "ood": {"sets": {"blobs": {}, "uniform-noise": {}, "mnist-samples": {}}}}
    card_path.write_text(json.dumps(card))
    monkeypatch.setenv("ROBUSTLENS_CHECKPOINTS", str(root))
    at = ok(open_page("views/zoo.py"))
    df = at.dataframe[0].value
    row = df[df["model"] == "tiny-pgd"].iloc[0]
    assert row["mca"] == 0.4123 and row["mauroc"] == 0.6789
    body = texts(at)
    assert "corruptions (mCA): 41.2% (15 x 5, N=1000 per cell, regenerated)" in body
    assert "OOD detection (mAUROC, MSP): 67.9% (3 outlier sets: blobs, uniform-noise, mnist-samples)" in body
    spec = str(at.get("plotly_chart")[0].proto.spec)
    assert "mCA (corruptions)" in spec and "mAUROC (OOD, MSP)" in spec


def test_feature_lens_and_class_visualisation(env):
    at = ok(open_page("views/feature_lens.py", query={"models": "tiny-rsupcon,tiny-ce"}))
    assert at.radio(key="w_lens_norm").value == "l2"  # the measured default: a large L2 budget
    assert at.slider(key="w_lens_l2").value == 6.0
    at.slider(key="w_lens_l2").set_value(4.0)
    at.number_input(key="w_lens_steps").set_value(5)
    at.number_input(key="w_lens_vis_steps").set_value(5)
    at.selectbox(key="w_lens_target").set_value(2)
    at.form_submit_button[0].click().run()
    ok(at)
    lens = at.session_state["lens"]["res"]
    assert set(lens) == {"tiny-rsupcon", "tiny-ce"}
    assert all(np.linalg.norm(r["delta"].ravel()) <= 4.0 + 1e-3 for r in lens.values())
    assert all(len(r["path"]) == 6 for r in lens.values())
    run_until(at, lambda a: a.session_state["classvis_queue"]["state"] != "running", "the class visualisation")
    ok(at)
    assert len(at.main.image) == 3 * 2  # toward target, change, from noise per model
    caps = captions(at)
    assert sum(c.startswith("toward bird: p=") for c in caps) == 2
    assert sum(c.startswith("from noise: p=") for c in caps) == 2
    assert len(at.get("plotly_chart")) == 1  # the target probability path, one line per model
    assert "L2 eps 4" in texts(at) and "Grad-CAM" in texts(at)
    # drawn row by row (finding 10: columns misaligned at 1024 px): every column holds one picture, so each
    # row of pictures is its own set of columns and starts at one height whatever the captions above wrap to
    per_column = [len(c.image) for c in at.main.columns]
    assert max(per_column) == 1 and sum(per_column) == 6, per_column  # the old grid: [3, 3]
    assert at.query_params["run"] == "1" and at.query_params["lens_l2"] == "4"


def test_feature_lens_quotes_the_lens_measured_on_its_models(tmp_path):
    """The captions' numbers come from the cards (scripts/lens_budget.py --card), for the budget shown."""
    from backend.core.checkpoints import read_card, write_card

    write_tiny_models(tmp_path / "ckpt")
    for mid, p_end, path in (("tiny-pgd", 0.9, [0.0, 0.2, 0.6, 0.9]), ("tiny-ce", 1.0, [0.0, 1.0, 1.0, 1.0])):
        card = read_card(tmp_path / "ckpt" / mid)
        card["lens_measured"] = {"images": ["samples:0"], "steps": 3, "budgets": [
            {"norm": "l2", "eps": e, "n": 1, "p_start": 0.0, "p_end": p_end, "path": path} for e in (6.0, 4.0)]}
        write_card(tmp_path / "ckpt" / mid, card)
    with app_environment(tmp_path / "ckpt", tmp_path / "no_data"):
        at = ok(open_page("views/feature_lens.py", query={"models": "tiny-pgd,tiny-ce", "lens_l2": "4",
                                                          "lens_steps": "2", "lens_vis_steps": "2"}))
        intro = ("Measured on 2 of the 3 models at the default L2 eps 6 (1 sample image, each pushed toward "
                 "its next class, 3 steps; scripts/lens_budget.py): the adversarially trained one reaches a mean "
                 "target probability of 0.90, passing 0.5 after 2 steps; the standard one reaches 1.00, passing "
                 "0.5 after 1 step.")
        assert intro in texts(at)
        at.form_submit_button[0].click().run()
        run_until(at, lambda a: a.session_state["classvis_queue"]["state"] != "running", "the class visualisation")
        paths_caption = next(c.value for c in at.caption if c.value.startswith("How each model's probability"))
        assert "Measured at L2 eps 4 (1 sample image" in paths_caption and "0.90" in paths_caption  # both models
        at.slider(key="w_lens_l2").set_value(5.0)
        at.form_submit_button[0].click().run()
        run_until(at, lambda a: a.session_state["classvis_queue"]["state"] != "running", "the class visualisation")
        paths_caption = next(c.value for c in at.caption if c.value.startswith("How each model's probability"))
        assert "Measured" not in paths_caption  # nobody measured L2 5


def test_feature_lens_l_inf_keeps_its_budget(env):
    at = ok(open_page("views/feature_lens.py", query={"models": "tiny-ce", "lens_norm": "linf", "lens_eps": "8",
                                                      "lens_steps": "3", "lens_vis_steps": "2"}))
    assert at.slider(key="w_lens_eps").value == 8
    at.form_submit_button[0].click().run()
    r = ok(at).session_state["lens"]["res"]["tiny-ce"]
    assert np.abs(r["delta"]).max() <= 8 / 255 + 1e-5


def test_a_feature_lens_link_shows_its_results_without_run(env):
    """The teacher runs the lens; a second session opening the page's URL gets the same results at once,
    from the service's cache (issue 20, finding 6)."""
    q = {"models": "tiny-pgd,tiny-ce", "lens_steps": "4", "lens_vis_steps": "3", "lens_target": "7"}
    teacher, link, student = teacher_then_student("views/feature_lens.py", q, "classvis_queue")
    assert {m: r["target_prob"] for m, r in student.session_state["lens"]["res"].items()} == \
        {m: r["target_prob"] for m, r in teacher.session_state["lens"]["res"].items()}
    assert sum(c.startswith("from noise: p=") for c in captions(student)) == 2
    # a link naming a model this server lacks says so and runs the others; without run=1 nothing runs
    gone = ok(open_page("views/feature_lens.py", query={**link, "models": "tiny-pgd,gone-model"}))
    assert any("gone-model" in w.value for w in gone.warning)
    assert set(gone.session_state["lens"]["res"]) == {"tiny-pgd"}
    plain = ok(open_page("views/feature_lens.py", query={k: v for k, v in link.items() if k != "run"}))
    assert "lens" not in plain.session_state and "Run the lens" in plain.info[0].value
    # a link to a test-set image on a server without the data set: said so, nothing run on another image
    other = ok(open_page("views/feature_lens.py", query={**link, "image": "test:5"}))
    assert "lens" not in other.session_state
    assert any("lens was for test:5" in i.value for i in other.info)


def test_train_page_start_and_cancel_job(env):
    at = ok(open_page("views/train.py"))
    assert "No jobs yet" in at.info[0].value
    at.selectbox(key="job_method").set_value("ce")
    at.selectbox(key="job_preset").set_value("smoke")
    at.text_input(key="job_name").input("app test job")
    at.form_submit_button[0].click().run()
    ok(at)
    assert at.dataframe[0].value["name"].tolist() == ["app test job"]
    job_id = at.session_state["job_selected"]
    at.button(key=f"cancel_{job_id}").click().run()
    assert not at.exception
    run_until(at, lambda a: a.dataframe[0].value["state"].tolist()[0] in ("cancelled", "done"), "the cancel")
    assert at.dataframe[0].value["state"].tolist() == ["cancelled"]
    assert at.button(key=f"resume_{job_id}")  # a cancelled job can be resumed
    # issue 20, finding 9: Resume takes the first action column (it sat in the second, beside a gap)
    cols = list(at.columns)
    i = next(k for k, c in enumerate(cols) if any(b.key == f"resume_{job_id}" for b in c.button))
    assert [c.weight for c in cols[i:i + 3]] == pytest.approx([0.2, 0.2, 0.6])


def test_training_curves_keep_their_panel_titles_and_the_waiting_note_in_the_middle_panel():
    from app.widgets import charts

    fig = charts.training_curves([{"x": 0.1, "loss": 2.3, "ips": 100.0}])
    assert fig.layout.margin.t >= 30  # the subplot titles sit above the plotting area
    note = next(a for a in fig.layout.annotations if "none yet" in a.text)
    lo, hi = fig.layout.xaxis2.domain
    assert note.xref == "paper" and lo < note.x < hi


def test_finished_job_joins_the_zoo_and_pickers(env, tmp_path, monkeypatch):
    root = tmp_path / "ckpt"
    write_tiny_models(root, models=(("tiny-ce", "ce", 3),))
    monkeypatch.setenv("ROBUSTLENS_CHECKPOINTS", str(root))  # a fresh service: the module's zoo stays as is
    at = ok(open_page("views/train.py"))
    at.selectbox(key="job_method").set_value("ce")
    at.selectbox(key="job_preset").set_value("smoke")
    at.form_submit_button[0].click().run()
    ok(at)
    run_until(at, lambda a: a.dataframe[0].value["state"].tolist()[0] not in ("queued", "running"),
              "the smoke job", limit_s=240)
    ok(at)
    job = at.dataframe[0].value.iloc[0]
    assert job["state"] == "done" and job["model"].startswith("job-")
    assert any(job["model"] in s.value for s in at.success)
    zoo = ok(open_page("views/zoo.py"))
    # the service re-reads the checkpoints folder at most every few seconds
    run_until(zoo, lambda a: job["model"] in a.dataframe[0].value["model"].tolist(), "the zoo to list it", 30)
    lab = ok(open_page())
    assert lab.session_state["p_models"] == [job["model"], "tiny-ce"]  # every model, by method then id


# ---- pure helpers behind the pages --------------------------------------------------------------
def test_imaging_helpers():
    import io

    import numpy as np
    from PIL import Image

    from app.widgets.imaging import amplify_delta, compose_grid_png, heat_rgb, upscale

    img = np.random.default_rng(0).random((32, 32, 3), dtype=np.float32)
    big = upscale(img, 160)
    assert big.shape == (160, 160, 3) and big.dtype == np.uint8
    assert (big[:5, :5] == big[0, 0]).all()  # nearest neighbour: each pixel becomes a 5x5 block
    delta = np.zeros((32, 32, 3), np.float32)
    delta[0, 0, 0], delta[1, 1, 1] = 4 / 255, -2 / 255
    amp, scale = amplify_delta(delta)
    assert scale == pytest.approx(0.5 / (4 / 255))
    assert amp[5, 5].tolist() == [128, 128, 128] and amp[0, 0, 0] == 255 and amp[1, 1, 1] == 64
    # issue 20, finding 10: a C&W run that changed nothing was captioned "perturbation x1048576"
    from app.widgets.imaging import delta_caption

    flat, s0 = amplify_delta(np.full((32, 32, 3), 4.7e-7, np.float32))
    assert s0 == 0 and (flat == 128).all() and delta_caption(s0) == "perturbation: none visible (< 1/2 grey level)"
    assert delta_caption(scale) == "perturbation x32"
    h = heat_rgb(np.linspace(0, 1, 32 * 32, dtype=np.float32).reshape(32, 32))
    lum = h.astype(float) @ [0.299, 0.587, 0.114]
    assert lum[0, 0] < lum[16, 0] < lum[31, 31]  # inferno: dark = unimportant, bright = important
    png = compose_grid_png(["a", "b"], [("clean", [img, None]), ("heat", [h, h])], "title", px=64)
    grid = Image.open(io.BytesIO(png))
    assert grid.format == "PNG" and grid.width > 2 * 64 and grid.height > 2 * 64
    with pytest.raises(ValueError):
        compose_grid_png(["a", "b"], [("row", [img])])


def test_grid_png_wraps_long_names_inside_their_columns():
    """Issue 24: the zoo's names ("PGD-AT FastNet w64 (15 ep)") ran into the next column of a Grid (PNG) and the
    figure, and a long title ran off the picture. Every text wraps to its box; the header grows to fit."""
    import io

    import numpy as np
    from PIL import Image, ImageDraw

    from app.widgets.imaging import _font, compose_grid_png, wrap_text

    f = _font(13)
    meter = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    lines = wrap_text("PGD-AT FastNet w64 (15 ep)", f, 96)
    assert len(lines) >= 2 and " ".join(lines) == "PGD-AT FastNet w64 (15 ep)"
    assert all(meter.textlength(t, font=f) <= 96 for t in lines)
    cut = wrap_text("x" * 80, f, 60)  # one word wider than the line is cut inside, nothing lost
    assert "".join(cut) == "x" * 80 and all(meter.textlength(t, font=f) <= 60 for t in cut)
    short = wrap_text("a b c d e f g h i j k l m n o p", f, 30, max_lines=2)
    assert len(short) == 2 and short[-1].endswith("…")
    assert wrap_text("", f, 50) == []
    img = np.zeros((32, 32, 3), np.float32)
    names = ["RSupCon FastNet w64 (15 ep)", "PGD-AT FastNet w64 (15 ep)"]
    tall = Image.open(io.BytesIO(compose_grid_png(names, [("clean", [img, img])], "t " * 60, px=96)))
    flat = Image.open(io.BytesIO(compose_grid_png(["a", "b"], [("clean", [img, img])], "t", px=96)))
    assert tall.width == flat.width and tall.height > flat.height  # same columns; the wrapped text takes rows


def test_display_png_is_the_upscaled_picture_losslessly_and_cached_by_content():
    import io

    import numpy as np
    from PIL import Image

    from app.widgets.imaging import display_png, upscale

    img = np.random.default_rng(1).random((32, 32, 3), dtype=np.float32)
    png = display_png(img, 160)
    shown = Image.open(io.BytesIO(png))
    assert shown.format == "PNG" and (np.asarray(shown) == upscale(img, 160)).all()  # exactly upscale's pixels
    assert display_png(img.copy(), 160) is png  # same content, another array: the cached bytes
    assert display_png(img, 96) is not png and display_png(img[::-1].copy(), 160) != png  # keyed by side and pixels
    big = np.random.default_rng(2).integers(0, 256, (224, 224, 3), dtype=np.uint8)
    thumb = Image.open(io.BytesIO(display_png(big, 64, smooth=True)))
    assert thumb.size == (64, 64)  # a large image is scaled down (smoothly), a small one upscaled
    assert Image.open(io.BytesIO(display_png(img, 64, smooth=True))).getpixel((0, 0)) == tuple(upscale(img, 64)[0, 0])
    for bad in (np.zeros((32, 32, 4)), np.zeros(5)):
        with pytest.raises(ValueError, match="image"):
            display_png(bad)
    from app.widgets import imaging  # bounded by bytes: the least recently used pictures go first

    budget = 3 * len(png) + 10
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(imaging, "PNG_CACHE_BYTES", budget)
        mp.setattr(imaging, "_png_cache", type(imaging._png_cache)())
        mp.setattr(imaging, "_png_bytes", [0])
        noise = np.random.default_rng(3).random((6, 32, 32, 3), dtype=np.float32)
        for a in noise:
            display_png(a, 160)
        assert 0 < imaging._png_bytes[0] <= budget and len(imaging._png_cache) < 6
        assert imaging._png_bytes[0] == sum(len(v) for v in imaging._png_cache.values())
        assert display_png(noise[-1], 160) is display_png(noise[-1], 160)  # the latest kept
    with pytest.raises(ValueError, match="px"):
        display_png(img, 0)


def test_url_values_parse_like_their_defaults():
    from app.session.state import _format, _parse

    assert _parse("8", 8) == 8 and _parse("0.5", 0.5) == 0.5 and _parse("1", False) is True
    assert _parse(["a,b", "c,d"], []) == ["c", "d"] and _parse("x", "y") == "x"
    with pytest.raises(ValueError):
        _parse("maybe", True)
    for v in (8, 0.05, True, ["a", "b"], "pgd"):
        assert _parse(_format(v), v) == v


def test_train_preset_text_comes_from_the_registry(env):
    """The Train page's preset help and caption state each preset's values from
    backend.train.config.PRESETS (through Service.limits()), never a hand-written copy."""
    from backend.train.config import PRESETS, make_config

    at = ok(open_page("views/train.py"))
    line = next(c.value for c in at.caption if c.value.startswith("Presets: "))
    from backend.service.jobs import PRESETS as JOB_PRESETS  # the presets a job may use: each one's text is shown

    assert set(JOB_PRESETS) <= set(PRESETS)
    for preset in JOB_PRESETS:
        cfg = make_config(preset, method="ce")
        images = "every training image" if not cfg.subset else f"{cfg.subset:,} images"
        epochs = f"{cfg.epochs} epoch{'s' if cfg.epochs != 1 else ''}"
        assert f"**{preset}**: width {cfg.width}, {epochs} on {images}, batch {cfg.batch_size}, " \
               f"{cfg.attack_steps}-step PGD" in line, (preset, line)
    assert "5 epochs on 5,000" not in "\n".join(c.value for c in at.caption)


def test_train_start_refused_without_data(env, monkeypatch):
    """With no training images (no data set, no synthetic job data) Start is refused with one clear
    message, and no job is created."""
    monkeypatch.delenv("ROBUSTLENS_JOB_DATA")
    at = ok(open_page("views/train.py"))
    before = len(at.dataframe[0].value) if at.dataframe else 0  # earlier tests of this module may have jobs
    at.selectbox(key="job_method").set_value("ce")
    at.form_submit_button[0].click().run()
    ok(at)
    assert any("needs a data set's training images" in w.value for w in at.warning)
    assert (len(at.dataframe[0].value) if at.dataframe else 0) == before  # no job was created


def test_attack_lab_targeted_reports_target_reached(env):
    """A targeted attack says whether the target became the prediction, with the target's probability
    (computed from the adversarial probabilities the attack returns)."""
    at = ok(open_page(query={"models": "tiny-ce", "attack": "pgd", "eps": "32", "steps_pgd": "20",
                             "targeted": "1", "target": "0", "sal": "none"}))
    html_all = html_text(at)
    m = re.search(r"target (not )?reached: airplane \(p=([0-9.]+)\)", html_all)
    assert m, html_all[-2000:]
    from backend.transport.client import make_client

    r = make_client().attack(at.session_state["p_image"], {"method": "pgd", "norm": "linf", "eps": 32 / 255,
                             "steps": 20, "random_start": True, "targeted": True, "target_class": 0},
                             ["tiny-ce"])["results"]["tiny-ce"]
    assert (m.group(1) is None) == (int(r["adv"]["pred"]) == 0)
    assert float(m.group(2)) == pytest.approx(float(r["adv"]["probs"][0]), abs=0.006)
    assert "flipped:" not in html_all


def test_prewarm_computes_the_attack_labs_default_view(env):
    """app.prewarm precomputes what the home page asks for by default: the same image (the rule) and
    the same attack as the page's default widget values."""
    from app.session import home
    from backend.transport.client import make_client

    at = ok(open_page())
    ss = at.session_state
    page_spec = {"method": ss["p_attack"], "norm": "linf", "eps": ss["p_eps"] / 255.0, "steps": ss["p_steps_pgd"],
                 "random_start": ss["p_rs"]}
    assert ss["p_step_linf"] == "auto" and not ss["p_targeted"] and ss["p_mode"] == "whitebox"
    client = make_client()
    lim = client.limits()
    assert page_spec == home.default_spec(lim["attack"], 32) and ss["p_sal"] == lim["saliency"]["default"]
    out = home.default_view(client)
    assert out["default_image"] == ss["p_image"] and out["total_s"] >= 0
    assert out["spec"] == page_spec and out["saliency"] == ss["p_sal"]


def test_attack_outcome_headline_counts_only_models_the_attack_fooled():
    """Issue 20, finding 3: "flipped on 5 of 5" counted models already wrong on the clean image (and a
    targeted attack that turned a wrong model right). The headline counts what a reader takes it to."""
    from app.widgets.attack_ui import outcome_headline

    def r(clean, adv):
        return {"clean": {"pred": clean}, "adv": {"pred": adv}, "flipped": clean != adv}
    ids = ["a", "b", "c", "d"]
    res = {"a": r(3, 5), "b": r(3, 3), "c": r(1, 2), "d": r(1, 3)}  # true class 3: c, d wrong when clean
    assert outcome_headline(res, ids, 3, None, CIFAR10_CLASSES) == \
        "fooled **1 of 2** models that were right on the clean image; 2 already wrong before the attack"
    assert outcome_headline(res, ids, 3, 5, CIFAR10_CLASSES) == "target **dog** reached on **1 of 4** models"
    assert outcome_headline(res, ids, None, None, CIFAR10_CLASSES) == \
        "prediction changed on **3 of 4** models (true class unknown)"
    assert outcome_headline({"a": r(3, 3)}, ["a"], 3, None, CIFAR10_CLASSES) == \
        "fooled **0 of 1** model that were right on the clean image"


def test_attack_lab_headline_matches_the_backend_results(env):
    at = ok(open_page(query={"attack": "pgd", "eps": "8", "steps_pgd": "5", "sal": "none"}))
    from backend.transport.client import make_client

    image = at.session_state["p_image"]
    res = make_client().attack(image, {"method": "pgd", "norm": "linf", "eps": 8 / 255, "steps": 5,
                                       "random_start": True}, MODEL_IDS)["results"]
    label = make_client().get_image(image)["label"]
    right = [m for m in MODEL_IDS if int(res[m]["clean"]["pred"]) == label]
    fooled = sum(int(res[m]["adv"]["pred"]) != label for m in right)
    assert f"fooled **{fooled} of {len(right)}**" in " ".join(m.value for m in at.markdown)
    assert "prediction flipped on" not in " ".join(m.value for m in at.markdown)


def test_deletion_chart_names_the_probability_it_plots():
    """Issue 20, finding 7: the y-axis said "target probability" where the caption and the backend mean the
    class predicted on the clean image."""
    from app.widgets import charts

    fig = charts.auc_curves({"Gradient": (np.linspace(1, 0, 5), np.linspace(0, 1, 5))})
    assert fig.layout.yaxis.title.text == "p(class predicted on the clean image)"


def test_flip_matrix_titles_wrap_and_line_up():
    """Issue 24: with the zoo's longer names ("PGD-AT FastNet w64 (15 ep)") a one-line plotly title ran past
    its column on a 1024-px page. Titles wrap at word boundaries, and matrices side by side reserve the same
    room for their titles, so their grids start at one height."""
    from app.widgets import charts

    mat = np.eye(3, dtype=int)
    long, short = "RSupCon FastNet w64 (15 ep) at 8/255", "CE at 8/255"
    assert all(len(line) <= 32 for line in charts.wrap_title(long)) and len(charts.wrap_title(long)) == 2
    assert " ".join(charts.wrap_title(long)) == long  # nothing dropped
    n = len(charts.wrap_title(long))
    a, b = (charts.flip_matrix(mat, ["x", "y", "z"], title=t, title_lines=n) for t in (long, short))
    assert a.layout.title.text.count("<br>") == 1 and "<br>" not in b.layout.title.text
    assert a.layout.margin.t == b.layout.margin.t and a.layout.height == b.layout.height
    assert charts.flip_matrix(mat, ["x", "y", "z"]).layout.margin.t < a.layout.margin.t  # no title, no room


def test_a_link_to_an_image_this_server_lacks_says_so_in_the_page(env):
    """Issue 20, finding 4: a shared link to a test-set image, opened where there is no data, showed a long
    sidebar error in developer words and silently switched to another image."""
    at = open_page(query={"image": "test:5285", "sal": "none", "attack": "fgsm"})
    ok(at)  # no error box
    note = next(w.value for w in at.warning if "cannot be opened here" in w.value)
    shown = at.session_state["p_image"]
    assert shown.startswith("samples:") and f"Showing **{shown}** instead" in note
    assert "test set, which is not installed on this server" in note
    assert "download=True" not in note and "cifar10_pack" not in note


def test_per_class_legend_tells_clean_from_robust():
    """Issue 20, finding 10: the clean bars were the robust colour at opacity 0.35, which the legend's
    swatch does not show, so both entries had the same swatch."""
    from app.widgets import charts

    fig = charts.per_class({"m": {"clean": [0.5, 0.6], "robust": [0.2, 0.3]}}, ["a", "b"])
    clean, robust = fig.data
    assert clean.marker.color != robust.marker.color and clean.marker.opacity is None
    assert clean.marker.pattern.shape == "/" and charts.tint("#2f5bd3", 1.0) == "#2f5bd3"
    assert charts.tint("#000000", 0.0) == "#ffffff"


LESSON_STEPS = {  # step -> (a text each step's page shows, pictures in the main area beyond the sidebar's)
    "fool": ("before,", 2), "hold": ("adversarially trained model(s)", 3), "change": (", L2 ", 3),
    "looks": ("scaled to its own brightest pixel", 3), "embedding": ("Changed predictions of 20 images", 0),
    "draws": ("steps.", 6)}


@pytest.mark.parametrize("step", list(LESSON_STEPS))
def test_lesson_step_from_a_link(env, step):
    """Each Lesson step opened from a link (step and image in the URL) shows its live view, offline."""
    at = ok(open_page("views/lesson.py", query={"step": step, "image": "samples:4"}))
    assert at.radio(key="w_step").value == step
    assert at.query_params["step"] == step and at.query_params["image"] == "samples:4"
    text, n_img = LESSON_STEPS[step]
    shown = texts(at) + "\n" + "\n".join(captions(at))
    assert text in shown, shown
    main_imgs = [im for im in at.main.image if "sample" not in " ".join(im.captions)]
    assert len(main_imgs) >= n_img
    if step == "embedding":
        assert len(at.get("vega_lite_chart")) == len(MODEL_IDS)
    if step == "draws":
        assert len(at.get("plotly_chart")) == 1


def test_lesson_next_and_previous(env):
    at = ok(open_page("views/lesson.py"))
    assert at.radio(key="w_step").value == "fool" and at.button(key="lesson_prev").disabled
    seen = []
    for _ in range(5):
        at.button(key="lesson_next").click().run()
        ok(at)
        seen.append(at.query_params["step"])
    assert seen == ["hold", "change", "looks", "embedding", "draws"] and at.button(key="lesson_next").disabled
    at.button(key="lesson_prev").click().run()
    assert ok(at).query_params["step"] == "embedding"
