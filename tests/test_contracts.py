"""The model and dataset contracts: a toy non-ResNet CNN added through the architecture registry alone
is saved, loaded by the Service and attacked, explained, embedded, sanity-checked and lens-viewed like
our ResNet-18, and shown by an app page; data set entries carry their classes, size and colours."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
from PIL import Image

from backend.core import archs, data, datasets
from backend.core.architectures.resnet18 import ResNet18
from backend.core.checkpoints import (
    CARD,
    CheckpointError,
    list_checkpoints,
    load_checkpoint,
    new_card,
    read_card,
    save_checkpoint,
)
from backend.core.models import build_model
from backend.explain import lens
from backend.service import Service
from tests.helpers import write_tiny_checkpoint

TOY = "toycnn"


class ToyCNN(nn.Module):
    """Three conv blocks, global average pooling and a linear layer: no `layer4`, no `fc`."""

    def __init__(self, num_classes: int = 10, channels: int = 8, input_size: int = 32):
        super().__init__()
        c = channels
        self.num_classes, self.feature_dim, self.input_size = num_classes, 2 * c, input_size
        self.block1 = nn.Sequential(nn.Conv2d(3, c, 3, padding=1), nn.ReLU())
        self.block2 = nn.Sequential(nn.Conv2d(c, 2 * c, 3, stride=2, padding=1), nn.ReLU())
        self.block3 = nn.Sequential(nn.Conv2d(2 * c, 2 * c, 3, padding=1), nn.ReLU())
        self.out = nn.Linear(2 * c, num_classes)

    @property
    def classifier(self) -> nn.Module:
        return self.out

    @property
    def cam_layer(self) -> nn.Module:
        return self.block3

    def stages(self) -> list[tuple[str, nn.Module]]:
        return [("out", self.out), ("block3", self.block3), ("block2", self.block2), ("block1", self.block1)]

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.block3(self.block2(self.block1(x))).mean(dim=(2, 3))

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.features(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits(x)


@pytest.fixture(scope="module")
def toy_arch():
    archs.register_arch(archs.ArchSpec(TOY, ToyCNN, {"num_classes": 10, "channels": 8, "input_size": 32},
                                       label="Toy CNN (test)", choices={"channels": (4, 8)}))
    yield TOY
    archs.unregister_arch(TOY)


def write_toy(root: Path, model_id: str = "toy-cnn", input_size: int = 32, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    model = archs.build_arch(TOY, {"input_size": input_size})
    card = new_card(model_id, "ce", TOY, None, list(datasets.CIFAR10.classes), arch_args={"channels": 8},
                    input_size=input_size, display_name="Toy CNN (random init)", data_variant="none",
                    training={"time_s": 0.0, "hardware": "none", "epochs": 0}, status="test")
    return save_checkpoint(model, card, root / model_id, dtype=torch.float32)


@pytest.fixture(scope="module")
def toy_root(toy_arch, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("toy_ckpt")
    write_toy(root)
    write_tiny_checkpoint(root, "tiny-ce", "ce", seed=3)
    return root


# ---- the model contract ----------------------------------------------------------------------------
@pytest.mark.parametrize("arch", ["resnet18", TOY])
def test_both_architectures_satisfy_the_contract(toy_arch, arch):
    torch.manual_seed(0)
    m = archs.build_arch(arch, {"width": 16} if arch == "resnet18" else {}).eval()
    assert isinstance(m, archs.ClassifierModel)
    x = torch.rand(3, 3, 32, 32)
    f = m.features(x)
    assert f.shape == (3, m.feature_dim)
    assert torch.allclose(m(x), m.classifier(f), atol=1e-6) and torch.equal(m(x), m.logits(x))
    assert m(x).shape == (3, m.num_classes) and m.input_size == 32
    cam = {}
    m.cam_layer.register_forward_hook(lambda mod, i, o: cam.setdefault("out", o))
    m(x)
    assert cam["out"].dim() == 4  # a spatial map for Grad-CAM
    names = [n for n, _ in archs.stages(m)]
    assert names[0] in ("fc", "out") and len(names) == len(set(names)) >= 3


def test_registry_refuses_bad_entries_and_arguments(toy_arch):
    with pytest.raises(ValueError, match="already registered"):
        archs.register_arch(archs.ArchSpec(TOY, ToyCNN, {"num_classes": 10, "input_size": 32}))
    with pytest.raises(ValueError, match="must include 'input_size'"):
        archs.ArchSpec("x", ToyCNN, {"num_classes": 10})
    with pytest.raises(ValueError, match="no arguments \\['depth'\\]"):
        archs.build_arch(TOY, {"depth": 3})
    with pytest.raises(ValueError, match="channels must be one of"):
        archs.build_arch(TOY, {"channels": 5})
    # an architecture without a head of its own gets the generic one on its features (issue 24)
    headed = archs.build_arch(TOY, head=True)
    assert headed.head[0].in_features == headed.feature_dim and headed.head[-1].out_features == 128
    with pytest.raises(ValueError, match="unknown architecture 'vgg'; known: resnet18"):
        archs.get_arch("vgg")
    with pytest.raises(ValueError, match="missing features, logits, classifier, cam_layer, stages"):
        archs.check_model(nn.Sequential(nn.Flatten(), nn.Linear(3, 2)))
    assert archs.names()[0] == "resnet18" and TOY in archs.names()


def test_card_stores_builder_arguments_and_loading_rebuilds_from_the_registry(toy_root):
    card = read_card(toy_root / "toy-cnn")
    assert card["arch"] == TOY and card["width"] is None and card["input_size"] == 32
    assert card["arch_args"] == {"num_classes": 10, "channels": 8, "input_size": 32}
    loaded = load_checkpoint(toy_root / "toy-cnn")
    assert type(loaded.model) is ToyCNN and not any(p.requires_grad for p in loaded.model.parameters())
    torch.manual_seed(0)
    fresh = archs.build_arch(TOY)  # the same seed wrote the checkpoint: the same weights come back
    assert all(torch.equal(a, b) for a, b in zip(fresh.state_dict().values(), loaded.model.state_dict().values()))
    rn = read_card(toy_root / "tiny-ce")
    assert rn["arch_args"] == {"num_classes": 10, "width": 16, "proj_dim": 128, "head_bn": False, "input_size": 32}


def test_old_cards_without_arch_args_still_load(tmp_path):
    d = write_tiny_checkpoint(tmp_path, "old", "ce", seed=1)
    card = json.loads((d / CARD).read_text())
    new = load_checkpoint(d).model
    for key in ("arch_args", "input_size"):
        card.pop(key)
    (d / CARD).write_text(json.dumps(card))  # the card as schema-1 cards were written (weights unchanged)
    old = load_checkpoint(d).model
    assert isinstance(old, ResNet18) and old.width == 16 and old.input_size == 32
    assert all(torch.equal(a, b) for a, b in zip(new.state_dict().values(), old.state_dict().values()))


def test_a_card_naming_an_unknown_architecture_is_listed_but_refused_on_load(toy_arch, tmp_path):
    write_toy(tmp_path, "toy-gone")
    archs.unregister_arch(TOY)
    try:
        assert [c["id"] for c in list_checkpoints(tmp_path)] == ["toy-gone"]  # cards are read without weights
        with pytest.raises(CheckpointError, match="unknown architecture 'toycnn'"):
            load_checkpoint(tmp_path / "toy-gone")
    finally:
        archs.register_arch(archs.ArchSpec(TOY, ToyCNN, {"num_classes": 10, "channels": 8, "input_size": 32},
                                           label="Toy CNN (test)", choices={"channels": (4, 8)}))


def test_gradcam_weighs_the_contracts_cam_layer(toy_arch):
    """Grad-CAM of the toy model equals Grad-CAM written out on its cam_layer (block3), not another layer."""
    from backend.explain.saliency import attribute

    torch.manual_seed(0)
    model = archs.build_arch(TOY).eval()
    x, t = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1)), torch.tensor([1, 4])
    got = attribute(model, x, t, "gradcam")
    acts = {}
    h = model.block3.register_forward_hook(lambda mod, i, o: acts.setdefault("a", o))
    logits = model(x)
    h.remove()
    (g,) = torch.autograd.grad(logits.gather(1, t[:, None]).sum(), acts["a"])
    cam = (g.mean(dim=(2, 3), keepdim=True) * acts["a"]).sum(1, keepdim=True)  # (2,1,16,16)
    want = torch.nn.functional.interpolate(cam, (32, 32), mode="bilinear", align_corners=False)
    assert got.shape == (2, 3, 32, 32) and torch.allclose(got[:, :1], want.detach(), atol=1e-5)
    assert want.abs().max() > 0


def test_class_visualisation_follows_the_input_size(toy_arch, tmp_path):
    write_toy(tmp_path, "toy48", input_size=48)
    model = load_checkpoint(tmp_path / "toy48").model
    assert model.input_size == 48 and read_card(tmp_path / "toy48")["input_size"] == 48
    img, prob = lens.class_visualisation(model, 3, steps=3)
    assert img.shape == (1, 3, 48, 48) and 0.0 <= prob <= 1.0
    assert lens.class_visualisation(build_model("resnet18", 16), 3, steps=2)[0].shape == (1, 3, 32, 32)


# ---- through the service -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def service(toy_root, tmp_path_factory):
    s = Service(toy_root, jobs_root=tmp_path_factory.mktemp("toy_jobs"))
    yield s
    s.close()


def test_toy_model_through_the_service(service):
    assert [c["id"] for c in service.list_models()] == ["tiny-ce", "toy-cnn"]
    pred = service.predict("samples:0", ["toy-cnn"])["results"]["toy-cnn"]
    probs = [t["prob"] for t in pred["top"]]
    assert len(probs) == 5 and probs == sorted(probs, reverse=True)
    assert np.asarray(pred["probs"]).shape == (10,) and abs(float(np.sum(pred["probs"])) - 1) < 1e-5
    assert pred["pred"] == pred["top"][0]["index"] == int(np.argmax(pred["probs"]))

    eps = 8 / 255
    out = service.attack("samples:1", {"method": "pgd", "eps": eps, "steps": 3}, ["toy-cnn", "tiny-ce"],
                         saliency="gradcam")["results"]
    for m in ("toy-cnn", "tiny-ce"):
        delta = np.asarray(out[m]["delta"], dtype=np.float32)
        assert delta.shape == (32, 32, 3) and np.abs(delta).max() <= eps + 1e-5 and np.abs(delta).max() > 0

    for method in ("gradcam", "integrated_gradients"):
        e = service.explain("samples:2", "toy-cnn", method, params={"ig_steps": 4} if method != "gradcam" else None)
        heat, attr = np.asarray(e["heatmap"]), np.asarray(e["attribution"])
        assert heat.shape == (32, 32) and heat.min() >= 0 and heat.max() <= 1
        assert attr.shape == (3, 32, 32) and np.abs(attr).max() > 0

    sanity = service.sanity_check("samples:3", "toy-cnn", "gradient")
    assert sanity["stages"] == ["out", "block3", "block2", "block1"]
    assert len(sanity["similarity"]) == 4 and all(-1 <= r <= 1 for r in sanity["similarity"] if r == r)
    assert np.asarray(sanity["heatmaps_random"]).shape == (4, 32, 32)

    emb = service.embed("toy-cnn", n=20, method="pca", source="samples")
    assert np.asarray(emb["coords_clean"]).shape == (20, 2)
    assert np.array_equal(np.asarray(emb["pred_clean"]),
                          [service.predict(i, ["toy-cnn"])["results"]["toy-cnn"]["pred"] for i in emb["image_ids"]])

    fl = service.feature_lens("samples:4", 2, ["toy-cnn"], eps=16 / 255, steps=3)["toy-cnn"]
    assert 0 < np.abs(np.asarray(fl["delta"])).max() <= 16 / 255 + 1e-5 and 0 <= fl["target_prob"] <= 1


def test_limits_serve_the_dataset_and_architecture_registries(service):
    lim = service.limits()
    assert list(lim["datasets"])[:2] == ["cifar10", "cifar100"]
    c10, c100 = lim["datasets"]["cifar10"], lim["datasets"]["cifar100"]
    assert c10["classes"] == list(datasets.CIFAR10.classes) and c10["image_size"] == 32
    assert len(c100["classes"]) == len(set(c100["colours"])) == 100
    assert lim["architectures"]["resnet18"]["choices"]["width"] == [16, 32, 64]
    assert lim["architectures"][TOY]["defaults"] == {"num_classes": 10, "channels": 8, "input_size": 32}


def test_saliency_studio_page_with_the_toy_model(toy_root, tmp_path, monkeypatch):
    """The app's Saliency studio renders the toy model's maps and runs its sanity check (AppTest, in-process
    backend over the toy checkpoints folder, offline samples only)."""
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("ROBUSTLENS_CHECKPOINTS", str(toy_root))
    monkeypatch.setenv("RSUPCON_DATA", str(tmp_path / "no_data"))
    monkeypatch.delenv("BACKEND_URL", raising=False)
    monkeypatch.delenv("ROBUSTLENS_TOKEN", raising=False)
    at = AppTest.from_file(str(Path(__file__).resolve().parent.parent / "app" / "main.py"), default_timeout=180)
    at.query_params.update({"models": "toy-cnn", "sal_methods": "gradient,gradcam", "attack": "fgsm"})
    at.switch_page("views/saliency_studio.py")
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    assert at.title[0].value == "Saliency studio"
    assert len(at.main.image) == 1 + 2 + 2 * 2  # the input, clean and adversarial image, 2 methods x 2 maps
    at.button(key="sanity_run").click().run()
    assert not at.exception and not at.error
    assert at.session_state["sanity"]["key"][1] == "toy-cnn"
    assert at.session_state["sanity"]["res"]["stages"] == ["out", "block3", "block2", "block1"]


# ---- the dataset contract ------------------------------------------------------------------------
def make_tree(root: Path, classes, side: int, per_class: int = 1, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    for split in ("train", "test"):
        for k, name in enumerate(classes):
            d = root / split / name
            d.mkdir(parents=True)
            for i in range(per_class):
                px = rng.integers(0, 256, (side, side, 3), dtype=np.uint8)
                px[0, 0] = (k % 256, i, 0)  # every image differs
                Image.fromarray(px).save(d / f"{i:03d}.png")
    return root


def test_cifar100_entry_classes_colours_and_a_tree_of_its_shape(tmp_path):
    spec = datasets.get_dataset("cifar100")
    assert spec.num_classes == 100 and len(set(spec.classes)) == 100 and spec.image_size == 32
    assert len(set(c.upper() for c in spec.colours)) == 100 and all(len(c) == 7 for c in spec.colours)
    assert datasets.class_colours(100, "cifar100") == spec.colours and datasets.palette(10) == datasets.CIFAR10.colours
    d = spec.describe()
    assert d["num_classes"] == 100 and len(d["colours"]) == 100 and d["torchvision"]
    assert d["samples"]  # foolbox ships 20 CIFAR-100 test images
    make_tree(tmp_path / "c100", spec.classes, side=40)
    s = data.load_split(tmp_path / "c100", "test", dataset="cifar100", cache_dir=tmp_path / "cache")
    assert s.classes == spec.classes and s.images.shape == (100, 32, 32, 3)  # 40 px files resized to 32
    assert sorted(s.labels.tolist()) == list(range(100))
    wrong = make_tree(tmp_path / "c100bad", [f"k{i:03d}" for i in range(100)], side=32)
    with pytest.raises(ValueError, match="are not CIFAR-100's"):
        data.load_split(wrong, "test", dataset="cifar100", cache_dir=tmp_path / "cache")
    assert data.available_sources(dataset="cifar100")["samples"]["available"]


def test_a_registered_data_set_decodes_at_its_own_image_size(tmp_path):
    spec = datasets.register_dataset(datasets.DatasetSpec("toy64", "Toy 64", ("ant", "bee", "cow"), image_size=64))
    try:
        assert spec.colours == datasets.palette(3) and datasets.image_size_of("toy64") == 64
        make_tree(tmp_path / "t", spec.classes, side=80, per_class=2)
        s = data.load_split(tmp_path / "t", "train", dataset="toy64", cache_dir=tmp_path / "cache")
        assert s.images.shape == (6, 64, 64, 3) and s.float_images([0]).shape == (1, 3, 64, 64)
        data.clear_memory_cache()
        again = data.load_split(tmp_path / "t", "train", dataset="toy64", cache_dir=tmp_path / "cache")
        assert torch.equal(again.images, s.images)  # the disk cache keeps the size
        card = new_card("toy64-model", "ce", "resnet18", 16, list(spec.classes), dataset="toy64")
        assert card["input_size"] == 64 and card["arch_args"]["input_size"] == 64
    finally:
        datasets.unregister_dataset("toy64")
    with pytest.raises(ValueError, match="at least two distinct"):
        datasets.DatasetSpec("one", "One", ("a", "a"))
    with pytest.raises(ValueError, match="3 colours for 2 classes"):
        datasets.DatasetSpec("two", "Two", ("a", "b"), colours=("#000000",) * 3)


def test_no_class_name_list_outside_the_registry():
    """The class names live in the data sets' own modules only, backend/core/dataset_specs/ (grep over
    the sources for a second copy)."""
    repo = Path(__file__).resolve().parent.parent
    hits = []
    for path in list((repo / "backend").rglob("*.py")) + list((repo / "app").rglob("*.py")):
        text = path.read_text()
        if '"airplane", "automobile"' in text or "'airplane', 'automobile'" in text or "aquarium_fish baby" in text:
            hits.append(str(path.relative_to(repo)))
    assert sorted(hits) == ["backend/core/dataset_specs/cifar10.py", "backend/core/dataset_specs/cifar100.py"], hits
