"""Adding an attack and a saliency method is registering them: a toy of each, declared here and registered
through the registries alone (no other file edited), is validated by AttackSpec, served by limits(), runs
through the Service (in-process and over HTTP) and appears and works on the Attack lab page (AppTest).
Both are unregistered afterwards, so other tests see the default set."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from fastapi.testclient import TestClient
from streamlit.testing.v1 import AppTest

from backend.attacks import AttackSpec, registry
from backend.attacks.common import eps_param, forward
from backend.attacks.registry import Attack, Param, Variant
from backend.explain import saliency_registry
from backend.explain.saliency import to_heatmap
from backend.explain.saliency_registry import SaliencyMethod
from backend.service import Service
from backend.transport.client import HttpClient, InProcessClient
from backend.transport.server import create_app
from tests.helpers import app_environment, write_tiny_models

MAIN = str(Path(__file__).resolve().parent.parent / "app" / "main.py")
TOY_ATTACK, TOY_SALIENCY = "toy_signs", "toy_contrast"
TOY_LABEL = "Toy random signs (L-inf)"


def toy_signs(model, x, y, target, spec):
    """`steps` seeded draws of eps * random signs on a random `fraction` of the pixels (the toy's own
    parameter, no AttackSpec field); per image the draw with the highest loss is kept."""
    g = torch.Generator().manual_seed(spec.seed)
    best, best_loss = x.clone(), torch.full((x.shape[0],), -float("inf"), device=x.device)
    with torch.no_grad():
        for _ in range(spec.steps):
            signs = torch.randint(0, 2, x.shape[1:], generator=g).to(x.device, x.dtype) * 2 - 1
            signs = signs * (torch.rand(x.shape[1:], generator=g) < spec.param("fraction")).to(x.device, x.dtype)
            xa = (x + spec.eps * signs).clamp(0, 1)
            loss = F.cross_entropy(forward(model, xa), y, reduction="none")
            better = loss > best_loss
            best[better], best_loss[better] = xa[better], loss[better]
    return best, torch.full((x.shape[0],), spec.steps, dtype=torch.long, device=x.device), None, None


def toy_contrast(model, inp, target, params):
    """Each pixel's distance from the image's mean colour: no model, no gradients."""
    return (inp - inp.mean(dim=(2, 3), keepdim=True)).detach()


TOY_STEPS = Param("steps", "Draws", kind="int", default=3, lo=1, hi=20, offer=(1, 10), step=1, key="steps_toy",
                  help="Random sign patterns tried; the most damaging one is kept.")
TOY_FRACTION = Param("fraction", "Pixels changed", default=1.0, lo=0.0, hi=1.0, step=0.05, key="toy_fraction",
                     help="The share of pixels a draw changes.")


@pytest.fixture(scope="module")
def toys():
    registry.register(Attack(
        name=TOY_ATTACK, label="Toy", order=15, variants=(Variant("linf", TOY_LABEL, "A test attack."),),
        params=(eps_param("linf"), TOY_STEPS, TOY_FRACTION), run=toy_signs))
    saliency_registry.register(SaliencyMethod(
        TOY_SALIENCY, "Toy contrast", "Distance from the mean colour (a test method).", toy_contrast,
        gradients=False, order=15))
    yield
    registry.unregister(TOY_ATTACK)
    saliency_registry.unregister(TOY_SALIENCY)


@pytest.fixture(scope="module")
def env(toys, tmp_path_factory):
    """Three tiny models, no data set (the offline samples only), for the Service and the app."""
    root = tmp_path_factory.mktemp("ext_ckpt")
    write_tiny_models(root)
    with app_environment(root, tmp_path_factory.mktemp("ext_no_data")):
        yield root


def test_registries_list_validate_and_describe_the_toys(toys):
    assert TOY_ATTACK in registry.names() and TOY_SALIENCY in saliency_registry.names()
    spec = AttackSpec.from_dict({"method": TOY_ATTACK})
    assert (spec.norm, spec.eps, spec.steps, spec.step_size) == ("linf", pytest.approx(8 / 255), 3, None)
    assert spec.param("fraction") == 1.0 and spec.to_dict()["fraction"] == 1.0
    half = AttackSpec.from_dict({"method": TOY_ATTACK, "fraction": 0.5})
    assert half.param("fraction") == 0.5 and AttackSpec.from_dict(half.to_dict()) == half and half != spec
    with pytest.raises(ValueError, match="fraction must be in \\[0.0, 1.0\\], got 2"):
        AttackSpec.from_dict({"method": TOY_ATTACK, "fraction": 2})
    with pytest.raises(ValueError, match="unknown attack spec keys \\['fraction'\\]"):
        AttackSpec.from_dict({"method": "pgd", "fraction": 0.5})  # another attack's own parameter
    with pytest.raises(ValueError, match="steps must be in \\[1, 20\\], got 0"):
        AttackSpec(method=TOY_ATTACK, steps=0)
    with pytest.raises(ValueError, match="toy_signs supports norm linf"):
        AttackSpec(method=TOY_ATTACK, norm="l2")
    with pytest.raises(ValueError, match="toy_signs takes no step_size"):
        AttackSpec(method=TOY_ATTACK, step_size=0.01)
    with pytest.raises(ValueError, match="untargeted only"):
        AttackSpec(method=TOY_ATTACK, targeted=True)
    with pytest.raises(ValueError, match="already registered"):
        registry.register(registry.get(TOY_ATTACK))
    with pytest.raises(ValueError, match="declares no steps"):
        registry.register(Attack(name="no_steps", label="x", variants=(Variant("linf", "x"),),
                                 params=(eps_param("linf"),), run=toy_signs))
    assert "no_steps" not in registry.names()


@pytest.fixture(scope="module")
def service(env):
    svc = Service(env, jobs_root=env / ".jobs")
    yield svc
    svc.close()


@pytest.mark.parametrize("transport", ["inprocess", "http"])
def test_toys_run_through_the_service(service, transport):
    client = InProcessClient(service) if transport == "inprocess" else HttpClient(
        "http://testserver", http=TestClient(create_app(service), raise_server_exceptions=False))
    lim = client.limits()
    toy = lim["attack"]["attacks"][TOY_ATTACK]
    assert TOY_ATTACK in lim["attack"]["methods"] and toy["variants"][0]["label"] == TOY_LABEL
    steps = next(p for p in toy["params"] if p["name"] == "steps")
    assert (steps["default"], steps["range"], steps["offer"], steps["step"]) == (3, [1, 20], [1, 10], 1)
    assert lim["saliency"]["info"][TOY_SALIENCY]["label"] == "Toy contrast"
    assert lim["saliency"]["methods"][:2] == ["gradient", TOY_SALIENCY]  # its order puts it second

    res = client.attack("samples:3", {"method": TOY_ATTACK, "eps": 4 / 255, "steps": 2}, ["tiny-ce", "tiny-pgd"],
                        saliency=TOY_SALIENCY)
    for r in res["results"].values():
        assert r["linf"] <= 4 / 255 + 1e-6 and r["linf"] > 3 / 255 and r["iterations"] == 2
        sal = r["saliency_clean"]
        assert sal.shape == (32, 32) and 0 <= sal.min() <= sal.max() <= 1 and sal.max() > 0
    assert res["spec"]["steps"] == 2 and res["spec"]["method"] == TOY_ATTACK

    ex = client.explain("samples:3", "tiny-ce", TOY_SALIENCY)
    pixels = client.get_image("samples:3")["pixels"].astype(np.float32) / 255.0  # (32,32,3)
    x = torch.from_numpy(pixels.transpose(2, 0, 1)[None].copy())
    want = to_heatmap(toy_contrast(None, x, None, None), TOY_SALIENCY)[0]
    np.testing.assert_allclose(ex["heatmap"], want, atol=1e-5)
    met = client.saliency_metrics("samples:3", "tiny-ce", TOY_SALIENCY, spec={"method": TOY_ATTACK})
    assert 0 <= met["deletion_auc"] <= 1 and "drift" in met
    none = client.attack("samples:3", {"method": TOY_ATTACK, "fraction": 0.0}, ["tiny-ce"])
    assert none["results"]["tiny-ce"]["linf"] == 0 and none["spec"]["fraction"] == 0.0
    with pytest.raises(ValueError, match="steps must be in"):
        client.attack("samples:3", {"method": TOY_ATTACK, "steps": 50}, ["tiny-ce"])
    client.close()


def test_attack_lab_offers_and_runs_the_toys(env):
    at = AppTest.from_file(MAIN, default_timeout=180)
    at.query_params.update({"models": "tiny-ce", "attack": TOY_ATTACK, "sal": TOY_SALIENCY})
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    assert TOY_LABEL in at.selectbox(key="w_attack").options and at.selectbox(key="w_attack").value == TOY_ATTACK
    assert "Toy contrast" in at.selectbox(key="w_sal").options and at.selectbox(key="w_sal").value == TOY_SALIENCY
    body = "\n".join([m.value for m in at.markdown] + [c.value for c in at.caption])
    assert f"**{TOY_LABEL}, eps 8/255, 3 steps**" in body
    assert at.number_input(key="w_steps_toy").value == 3  # the toy's own parameter got a control
    assert [c.value.split(" |")[0] for c in at.caption if c.value.startswith("L-inf ")] == ["L-inf 8.0/255"]
    assert any("saliency, clean" in c for im in at.main.image for c in im.captions)
    at.number_input(key="w_steps_toy").set_value(5).run()
    assert not at.exception and not at.error
    assert f"{TOY_LABEL}, eps 8/255, 5 steps" in "\n".join(m.value for m in at.markdown)
    assert at.query_params["steps_toy"] == "5" and at.query_params["attack"] == TOY_ATTACK
    at.radio(key="w_sal_scale").set_value("shared").run()  # the toy's display rule comes from limits()
    assert not at.exception and not at.error
    assert any("one scale for all models" in h.value for h in at.html)
    at.number_input(key="w_toy_fraction").set_value(0.0).run()  # the toy's own parameter, through to the attack
    assert not at.exception and not at.error
    assert [c.value.split(" |")[0] for c in at.caption if c.value.startswith("L-inf ")] == ["L-inf 0.0/255"]
