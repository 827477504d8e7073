"""Imported models in a real browser (issue 12): a torchvision ResNet-50 at 224 px on ImageNet and,
with the import extra, RobustBench's Wong2020Fast architecture on CIFAR-10 (random weights, offline,
through robustbench's own load_model), beside our tiny models. Every analysis page must render for each
data set without an exception; screenshots go to test-artifacts/imports-*.png."""
from __future__ import annotations

import importlib.util

import pytest
import torch

from tests import test_browser
from tests.helpers import write_tiny_models
from tests.test_browser import app_server, no_exception, settle, shot

browser = test_browser.browser  # the Chromium fixture of tests/test_browser.py, shared
pytestmark = [pytest.mark.browser, pytest.mark.slow]
HAS_RB = importlib.util.find_spec("robustbench") is not None
# page path -> (h1, text shown once its first run is done)
PAGES = {"": ("Attack lab", "L-inf 8.0/255"), "saliency_studio": ("Saliency studio", "drift rho"),
         "embeddings": ("Embedding explorer", "Compute maps"), "robustness": ("Robustness", "press Run"),
         "feature_lens": ("Feature lens", "Run the lens"), "zoo": ("Model zoo", "Comparison")}


@pytest.fixture(scope="module")
def imports_app(tmp_path_factory):
    from backend.core import adapters
    from backend.imports import import_model

    tmp = tmp_path_factory.mktemp("browser_imports")
    ckpt = tmp / "ckpt"
    write_tiny_models(ckpt)
    torch.manual_seed(0)
    import_model("torchvision", "resnet50", root=ckpt, dtype=torch.float16)  # ImageNet, 224 px, weights=None
    if HAS_RB:
        folder = tmp / "rb" / "cifar10" / "Linf"
        folder.mkdir(parents=True)
        torch.save(adapters.robustbench_net("Wong2020Fast", "cifar10", "Linf").state_dict(), folder / "Wong2020Fast.pt")
        import_model("robustbench", "Wong2020Fast", dataset="cifar10", threat_model="Linf", model_dir=tmp / "rb",
                     root=ckpt, dtype=torch.float16)
    with app_server(ckpt, tmp) as url:
        yield url


def _visit_all(browser, base: str, query: str, tag: str) -> None:
    ctx = browser.new_context(viewport={"width": 1440, "height": 2200})
    pg = ctx.new_page()
    pg.set_default_timeout(180_000)
    try:
        for path, (title, ready) in PAGES.items():
            pg.goto(f"{base}/{path}?{query}")
            pg.get_by_role("heading", name=title, level=1).wait_for()
            pg.get_by_text(ready, exact=False).first.wait_for()
            settle(pg)
            no_exception(pg)
            shot(pg, f"imports-{tag}-{path or 'attack_lab'}")
    finally:
        ctx.close()


def test_imagenet_resnet50_on_every_page(imports_app, browser):
    _visit_all(browser, imports_app, "ds=imagenet&models=tv-resnet50", "imagenet-tv-resnet50")


@pytest.mark.skipif(not HAS_RB, reason="robustbench extra not installed (requirements-extras.txt)")
def test_robustbench_model_beside_ours_on_every_page(imports_app, browser):
    _visit_all(browser, imports_app, "ds=cifar10&models=rb-wong2020fast,tiny-rsupcon", "cifar10-rb-wong2020fast")
