"""Data sets in the Service (issue 12 points 2-3): image ids that name their data set, any model on any
image (resized in one place of the engine), over both transports.

A tmp checkpoints folder holds one of our tiny CIFAR-10 ResNet-18s (32 px), an imported torchvision
ResNet-18 for ImageNet at 64 px and a toy CNN (a trusted entry point) for CIFAR-10 at 48 px, all with
random weights; images are the offline foolbox samples (20 CIFAR-10, 20 ImageNet)."""
from __future__ import annotations

import io

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from backend.core import adapters
from backend.core.checkpoints import load_checkpoint
from backend.imports.sources import import_model
from backend.service import Service
from tests.helpers import both_clients, write_tiny_checkpoint

OURS, TV, TOY = "tiny-ce", "tv-resnet18", "own-toy"
PGD = {"method": "pgd", "eps": 8 / 255, "steps": 2}
ENTRY = "tests.toy_entry:build"


def write_zoo(root) -> None:
    """Our tiny ResNet-18 (cifar10, 32 px), an imported torchvision resnet18 (imagenet, 64 px) and a
    toy entry-point CNN (cifar10, 48 px)."""
    write_tiny_checkpoint(root, OURS, "ce", seed=3)
    torch.manual_seed(0)
    import_model("torchvision", "resnet18", dataset="imagenet", input_size=64, root=root)
    import_model("entrypoint", ENTRY, model_id=TOY, kwargs={"channels": 6}, input_size=48, root=root)


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(adapters.TRUST_ENV, ENTRY)
        root = tmp_path_factory.mktemp("zoo")
        write_zoo(root)
        yield root


@pytest.fixture(scope="module")
def clients(zoo, tmp_path_factory):
    yield from both_clients(zoo, tmp_path_factory.mktemp("jobs"))


@pytest.fixture(params=["inprocess", "http"])
def client(request, clients):
    return clients[request.param]


def png(side: int = 300, seed: int = 0) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (side, side, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


# ---- images per data set ---------------------------------------------------------------------------
def test_cards_carry_dataset_and_input_size(client):
    cards = {c["id"]: c for c in client.list_models()}
    assert (cards[OURS]["dataset"], cards[OURS]["input_size"]) == ("cifar10", 32)
    assert (cards[TV]["dataset"], cards[TV]["input_size"]) == ("imagenet", 64)
    assert (cards[TOY]["dataset"], cards[TOY]["input_size"]) == ("cifar10", 48)


def test_image_ids_name_their_data_set(client):
    listing = client.list_images("samples", None, 0, 5, dataset="imagenet")
    assert listing["total"] == 20 and [it["image_id"] for it in listing["items"]] == [
        f"imagenet/samples:{i}" for i in range(5)]
    img = client.get_image("imagenet/samples:0")
    assert img["pixels"].shape == (224, 224, 3) and img["pixels"].dtype == np.uint8
    assert img["dataset"] == "imagenet" and img["class_name"] == client.classes("imagenet")[img["label"]]
    assert listing["items"][0]["label"] == img["label"]
    # an unqualified id keeps meaning CIFAR-10; the qualified spelling names the same image
    plain, named = client.get_image("samples:3"), client.get_image("cifar10/samples:3")
    assert plain["pixels"].shape == (32, 32, 3) and plain["dataset"] == named["dataset"] == "cifar10"
    assert np.array_equal(plain["pixels"], named["pixels"]) and plain["label"] == named["label"]
    assert [it["image_id"] for it in client.list_images("samples", None, 0, 2)["items"]] == ["samples:0", "samples:1"]
    # a source may name its data set too
    assert client.list_images("imagenet/samples", None, 0, 1)["items"][0]["image_id"] == "imagenet/samples:0"


def test_classes_and_sources_per_data_set(client):
    assert len(client.classes("imagenet")) == 1000 and client.classes() == client.classes("cifar10")
    assert len(client.classes("cifar100")) == 100 and client.classes("cifar100")[0] == "apple"
    src = client.image_sources("imagenet")
    assert src["samples"]["available"] and src["samples"]["count"] == 20
    assert client.image_sources()["samples"]["count"] == 20
    assert client.image_sources("cifar100")["samples"]["available"]  # foolbox's 20 CIFAR-100 test images
    img = client.random_image("samples", None, 7, dataset="imagenet")
    assert img["image_id"].startswith("imagenet/samples:") and img["pixels"].shape == (224, 224, 3)


@pytest.mark.parametrize("call", [lambda c: c.classes("mnist"), lambda c: c.image_sources("mnist"),
                                  lambda c: c.list_images("samples", dataset="mnist"),
                                  lambda c: c.get_image("mnist/samples:0"),
                                  lambda c: c.upload_image(png(40), dataset="mnist")])
def test_unknown_data_set_names_the_known_ones(client, call):
    with pytest.raises(ValueError, match="unknown dataset 'mnist'; known: cifar10, cifar100, imagenet"):
        call(client)


def test_upload_is_decoded_at_the_data_set_size_and_remembers_it(client):
    a = client.upload_image(png(300), dataset="imagenet")
    assert a["image_id"].startswith("imagenet/upload:") and a["pixels"].shape == (224, 224, 3)
    assert a["dataset"] == "imagenet" and a["label"] is None
    again = client.get_image(a["image_id"])
    assert np.array_equal(again["pixels"], a["pixels"])
    b = client.upload_image(png(300))  # default: CIFAR-10's 32 px, an id without a data set
    assert b["image_id"].startswith("upload:") and b["pixels"].shape == (32, 32, 3)
    with pytest.raises(ValueError, match="unknown upload"):  # the same key under another data set is unknown
        client.get_image("cifar100/" + b["image_id"])


# ---- any model on any image -------------------------------------------------------------------------
def test_predict_on_each_data_set(client):
    out = client.predict("imagenet/samples:0", [TV], topk=3)["results"][TV]
    assert out["probs"].shape == (1000,) and abs(float(out["probs"].sum()) - 1) < 1e-4
    assert len(out["top"]) == 3 and out["top"][0]["class_name"] == client.classes("imagenet")[out["pred"]]
    ours = client.predict("samples:0", [OURS, TOY])["results"]
    assert ours[OURS]["probs"].shape == ours[TOY]["probs"].shape == (10,)


def test_cross_data_set_predict_is_the_model_on_the_resized_image(zoo, client):
    """Our 32-px model on a 224-px ImageNet sample (and the 64-px ImageNet model on a 32-px CIFAR one)
    gives exactly what the model gives on the image resized bilinearly (antialiased) to its input size."""
    for model_id, image_id, size in ((OURS, "imagenet/samples:0", 32), (TV, "samples:0", 64),
                                     (TOY, "samples:0", 48)):
        probs = client.predict(image_id, [model_id])["results"][model_id]["probs"]
        px = client.get_image(image_id)["pixels"]
        x = torch.from_numpy(np.array(px)).permute(2, 0, 1)[None].float() / 255
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True).clamp(0, 1)
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv(adapters.TRUST_ENV, ENTRY)
            model = load_checkpoint(zoo / model_id).model
        with torch.no_grad():
            want = torch.softmax(model(x), 1)[0].numpy()
        np.testing.assert_allclose(probs, want, atol=1e-5)


def test_true_label_only_on_the_model_s_own_data_set(clients):
    engine = clients["inprocess"].service.engine
    label = clients["inprocess"].get_image("imagenet/samples:0")["label"]
    x, y = engine.model_input(TV, "imagenet/samples:0")
    assert x.shape == (1, 3, 64, 64) and y == label
    x, y = engine.model_input(OURS, "imagenet/samples:0")
    assert x.shape == (1, 3, 32, 32) and y is None  # another data set's label means nothing to this model
    x, y = engine.model_input(TOY, "samples:4")
    assert x.shape == (1, 3, 48, 48) and y == clients["inprocess"].get_image("samples:4")["label"]


def test_attack_and_explain_come_back_at_the_model_input_size(client):
    r = client.attack("imagenet/samples:0", PGD, [TV], saliency="gradient")["results"][TV]
    assert r["adv_pixels"].shape == r["delta"].shape == (64, 64, 3)
    assert r["saliency_clean"].shape == r["saliency_adv"].shape == (64, 64)
    assert float(np.abs(r["delta"]).max()) <= 8 / 255 + 1e-6 and r["clean"]["probs"].shape == (1000,)
    ex = client.explain("imagenet/samples:0", TV, "gradient")
    assert ex["heatmap"].shape == (64, 64) and ex["attribution"].shape == (3, 64, 64)
    # our 32-px model attacked on an ImageNet image: at 32 px, against its own clean prediction
    mine = client.attack("imagenet/samples:0", PGD, [OURS])["results"][OURS]
    assert mine["adv_pixels"].shape == (32, 32, 3)
    assert client.explain("samples:0", TOY, "gradient")["heatmap"].shape == (48, 48)


def test_transfer_between_input_sizes(client):
    out = client.attack("samples:2", PGD, [TOY, OURS], mode="transfer", source_model=OURS,
                        saliency="gradient")["results"]
    assert out[TOY]["adv_pixels"].shape == (32, 32, 3)  # the image as crafted on the 32-px source
    assert out[TOY]["saliency_adv"].shape == (48, 48)   # the 48-px model's maps at its size
    assert out[OURS]["saliency_adv"].shape == (32, 32)


def test_many_image_analyses_read_the_model_s_data_set(client):
    emb = client.embed(TV, n=10, method="pca", source="samples")
    assert len(emb["image_ids"]) == 10 and all(i.startswith("imagenet/samples:") for i in emb["image_ids"])
    assert emb["coords_clean"].shape == (10, 2)
    curve = client.robustness_curve([TOY], "fgsm", [0.0, 8 / 255], n=10, source="samples")[TOY]
    assert len(curve["accuracy"]) == 2 and curve["flip_matrix"].shape == (10, 10)
    with pytest.raises(ValueError, match="own data set"):
        client.robustness_curve([TV, OURS], "fgsm", [0.0, 8 / 255], n=10, source="samples")


def test_a_data_root_serves_only_the_data_set_it_holds(zoo, tmp_path):
    """A CIFAR-10 ImageFolder tree is CIFAR-10's test split, not ImageNet's nor CIFAR-100's."""
    from backend.core.datasets import CIFAR10

    rng = np.random.default_rng(0)
    for k, name in enumerate(CIFAR10.classes):
        d = tmp_path / "data" / "test" / name
        d.mkdir(parents=True)
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(d / f"{k}.png")
    svc = Service(zoo, data_root=tmp_path / "data", jobs_root=tmp_path / "jobs")
    try:
        assert svc.image_sources()["test"] == {**svc.image_sources()["test"], "available": True, "count": 10}
        for other in ("imagenet", "cifar100"):
            src = svc.image_sources(other)["test"]
            assert not src["available"] and src["count"] == 0
            with pytest.raises(ValueError, match="not available"):
                svc.list_images("test", dataset=other)
        items = svc.list_images("test", "cat", 0, 5)["items"]
        assert [it["image_id"] for it in items] == ["test:3"] and svc.get_image("test:3")["class_name"] == "cat"
    finally:
        svc.close()
