"""The app with models of two data sets (issue 12 point 3): the data set is chosen first (sidebar, in the
URL), the pickers list that data set's models and images, and every analysis page renders with ImageNet
chosen and an imported torchvision ResNet-18 (random weights, 64 px) beside our tiny CIFAR-10 models.
AppTest against the real in-process backend; images are the offline foolbox samples."""
from __future__ import annotations

import json

import pytest

from backend.core import adapters
from tests.helpers import app_environment
from tests.test_app_pages import ok, open_page, run_until, texts
from tests.test_datasets_service import ENTRY, OURS, TOY, TV, write_zoo


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("app_zoo")
    with app_environment(root, tmp_path_factory.mktemp("no_data"), **{adapters.TRUST_ENV: ENTRY}):
        write_zoo(root)
        # the torchvision import measured on the offline samples (evaluate --source samples), written
        # before any page lists the cards: the zoo page must say where it was measured
        card_path = root / TV / "card.json"
        card = json.loads(card_path.read_text())
        card["metrics"] = {"clean": 0.05, "n_clean": 20,
                           "eval": {"split": "samples", "data_variant": "imagenet-foolbox-samples"}}
        card_path.write_text(json.dumps(card))
        yield root


def test_data_set_choice_first_and_the_pickers_follow_it(env):
    at = ok(open_page())
    ds = at.sidebar.selectbox(key="w_ds")
    assert ds.options == ["CIFAR-10 (2 models, 32 px)", "ImageNet-1k (1 models, 224 px)"]
    assert at.session_state["p_models"] == [OURS, TOY]  # CIFAR-10 first: the first card's data set
    assert not at.query_params["image"].startswith("imagenet/")
    ds.set_value("imagenet").run()
    ok(at)
    assert at.session_state["p_models"] == [TV]
    assert at.query_params["ds"] == "imagenet" and at.query_params["image"].startswith("imagenet/samples:")
    # chips say where each model comes from beside imported ones
    chips = at.multiselect(key="w_models").options
    assert any("torchvision" in c for c in chips)
    # the choice holds on the next page, and its link carries it
    at.switch_page("views/feature_lens.py").run()
    ok(at)
    assert at.query_params["ds"] == "imagenet" and at.query_params["image"].startswith("imagenet/")
    assert at.session_state["p_models"] == [TV]


def test_attack_lab_with_imagenet(env):
    at = ok(open_page(query={"ds": "imagenet", "sal": "gradient"}))
    assert at.title[0].value == "Attack lab" and at.session_state["p_models"] == [TV]
    assert "PGD, L-inf" in texts(at) and len(at.main.image) >= 5
    assert at.query_params["image"].startswith("imagenet/samples:") and at.query_params["ds"] == "imagenet"
    picked = [c for im in at.sidebar.image for c in im.captions if c.startswith("imagenet/samples:")]
    assert picked, "the sidebar shows the picked ImageNet image"


def test_saliency_studio_with_imagenet(env):
    at = ok(open_page("views/saliency_studio.py", query={"ds": "imagenet", "sal_methods": "gradient",
                                                         "attack": "fgsm"}))
    assert at.title[0].value == "Saliency studio"
    assert len(at.main.image) == 1 + 2 + 2  # the input, clean + adversarial, two maps


def test_embedding_explorer_with_imagenet(env):
    at = ok(open_page("views/embeddings.py", query={"ds": "imagenet"}))
    at.slider(key="w_emb_n").set_value(10)
    at.toggle(key="w_emb_pca").set_value(True)
    at.form_submit_button[0].click().run()
    ok(at)
    run_until(at, lambda a: a.session_state["emb_queue"]["state"] != "running", "the embedding task")
    ok(at)
    q = at.session_state["emb_queue"]
    assert q["state"] == "done" and set(q["results"]) == {TV}
    assert all(i.startswith("imagenet/samples:") for i in q["results"][TV]["image_ids"])


def test_robustness_with_imagenet(env):
    at = ok(open_page("views/robustness.py", query={"ds": "imagenet", "rob_methods": "fgsm", "rob_eps": "0,8",
                                                    "rob_n": "10"}))
    at.form_submit_button[0].click().run()
    run_until(at, lambda a: a.session_state["curve_queue"]["state"] != "running", "the FGSM curve")
    ok(at)
    res = at.session_state["curve_queue"]["results"]["fgsm"]
    assert set(res) == {TV} and res[TV]["n"] == 10
    # 1000 classes: the flip matrix keeps only the classes the sample holds or the attack predicts
    flip = json.loads(at.get("plotly_chart")[1].proto.spec)["data"][0]
    held = {int(i) for i in res[TV]["flip_matrix"].sum(axis=1).nonzero()[0]}
    z = flip["z"]
    assert len(held) <= len(flip["x"]) <= 20 and (z["shape"] if isinstance(z, dict) else f"{len(z)}, {len(z)}") \
        == f"{len(flip['x'])}, {len(flip['x'])}"


def test_feature_lens_with_imagenet(env):
    at = ok(open_page("views/feature_lens.py", query={"ds": "imagenet"}))
    at.number_input(key="w_lens_steps").set_value(2)
    at.number_input(key="w_lens_vis_steps").set_value(2)
    at.form_submit_button[0].click().run()
    ok(at)
    lens = at.session_state["lens"]["res"]
    assert set(lens) == {TV} and lens[TV]["pixels"].shape == (64, 64, 3)


def test_zoo_lists_every_data_set_with_provenance(env):
    at = ok(open_page("views/zoo.py"))
    body = texts(at)
    assert "(measured on imagenet-foolbox-samples)" in body and body.count("(measured on") == 1  # only there
    assert sorted(at.dataframe[0].value["model"]) == sorted([OURS, TV, TOY])
    body = texts(at)
    assert "from torchvision: resnet18" in body and "licence" in body


def test_panels_are_sized_for_the_resolution():
    from app.widgets.components import display_side
    from app.widgets.imaging import DISPLAY_PX

    assert display_side(32) == DISPLAY_PX                        # CIFAR: upscaled to the grid's side
    assert display_side(224) == 224                              # ImageNet: drawn at its own size
    assert display_side(64, dataset_side=224) == 224             # a 64-px model's maps beside a 224-px image
    assert display_side(32, px=112, dataset_side=32) == 112      # a smaller grid cell keeps its size


@pytest.mark.parametrize("side, pgd_steps, cw_steps", [(32, 10, 100), (64, 10, 100), (224, 5, 30)])
def test_fewer_attack_steps_by_default_for_imagenet_size_models(side, pgd_steps, cw_steps):
    """Issue 12 (224-px speed): the attack controls start at the registry's large_default steps for
    models from limits' large_input_px up (a PGD step at 224 px costs ~10x one at 32 px), else at the
    default; the same controls, the real registry."""
    from streamlit.testing.v1 import AppTest

    def script(side):
        import streamlit as st

        from app.widgets import attack_ui
        from backend import attacks

        alim = attacks.describe()
        spec, desc = attack_ui.controls(["a", "b"], alim=alim, input_size=side)
        st.session_state["spec"] = spec
        spec2, _ = attack_ui.controls(["a", "b"], prefix="cw_", alim=alim, default="cw", input_size=side)
        st.session_state["spec2"] = spec2

    at = AppTest.from_function(script, kwargs={"side": side}).run(timeout=30)
    assert not at.exception, at.exception
    assert at.session_state["spec"]["method"] == "pgd" and at.session_state["spec"]["steps"] == pgd_steps
    assert at.session_state["spec2"]["method"] == "cw" and at.session_state["spec2"]["steps"] == cw_steps


def test_large_default_is_checked_against_the_range():
    from backend.attacks.registry import Param

    with pytest.raises(ValueError, match="steps must be in"):
        Param("steps", "Steps", kind="int", default=10, lo=1, hi=20, large_default=50)
    from app.session.home import param_default

    q = Param("steps", "Steps", kind="int", default=10, lo=1, hi=20, large_default=5).describe()
    alim = {"large_input_px": 128}
    assert [param_default(q, alim, side) for side in (None, 32, 127, 128, 224)] == [10, 10, 10, 5, 5]
    assert param_default({**q, "large_default": None}, alim, 224) == 10


def test_saliency_studio_starts_imagenet_size_models_without_the_many_pass_methods():
    """The registry's methods as limits() lists them: at 32 px the studio starts with every default_on method; from
    the attacks' large_input_px up, Integrated Gradients and SmoothGrad (32 and more passes per map) start
    unselected (a 224-px ResNet-50 took over 100 s for the four default methods in a browser test)."""
    from app.session.home import default_saliency_methods
    from backend.attacks import registry as attack_registry
    from backend.explain.saliency import SaliencyParams
    from backend.explain.saliency_registry import describe

    slim = describe(SaliencyParams().__dict__)
    alim = {"large_input_px": attack_registry.LARGE_INPUT_PX}
    small = default_saliency_methods(slim, alim, 32)
    assert small == [m for m in slim["methods"] if slim["info"][m]["default_on"]]
    assert {"gradient", "integrated_gradients", "smoothgrad", "gradcam"} <= set(small)
    assert default_saliency_methods(slim, alim, attack_registry.LARGE_INPUT_PX - 1) == small
    large = default_saliency_methods(slim, alim, 224)
    assert large == [m for m in small if m not in ("integrated_gradients", "smoothgrad")] and "gradient" in large
    assert default_saliency_methods(slim, {}, 224) == small  # a backend that names no large size: the plain defaults
