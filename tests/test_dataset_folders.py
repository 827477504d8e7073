"""ImageFolder trees beyond CIFAR's exact layout (issue 12): ImageNet class folders by WordNet id,
trees holding some of a registered data set's classes, ImageNet's val/ as the test split, an
unregistered data set's dataset.json manifest, and evaluation on the offline samples or on an
ImageNet-style val folder. Every tree is a few seeded random images made here with PIL."""
from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
from PIL import Image

from backend.core import adapters, data, datasets, imagefiles
from backend.core.checkpoints import read_card
from backend.core.data import DataNotFoundError, available_sources, load_split
from backend.core.datasets import CIFAR10, IMAGENET

HAS_FOOLBOX = importlib.util.find_spec("foolbox") is not None
TENCH, GOLDFISH, RETRIEVER, TISSUE = "n01440764", "n01443537", "n02099601", "n15075141"  # labels 0, 1, 207, 999
ENTRY = f"{__name__}:tiny_imagenet_net"


def tiny_imagenet_net(num_classes: int = 1000) -> nn.Module:
    """A network cheap enough at 224 px for a test (an 8x8 stride-8 stem): the entry point of the
    ImageNet-card model these tests import."""
    return nn.Sequential(nn.Conv2d(3, 4, 8, stride=8), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, num_classes))


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, tmp_path):
    monkeypatch.delenv("RSUPCON_DATA", raising=False)
    monkeypatch.setenv("ROBUSTLENS_CACHE", str(tmp_path / "cache"))
    data.clear_memory_cache()
    yield
    data.clear_memory_cache()


def make_split(folder: Path, classes, per_class: int = 2, side: int = 40, seed: int = 0) -> Path:
    """folder/<class>/<k>.png: per_class random images per class, the odd ones side x (side*3/4)."""
    rng = np.random.default_rng(seed)
    for c in classes:
        (folder / c).mkdir(parents=True, exist_ok=True)
        for k in range(per_class):
            h = side if k % 2 == 0 else side * 3 // 4
            Image.fromarray(rng.integers(0, 256, (h, side, 3), dtype=np.uint8)).save(folder / c / f"{k:03d}.png")
    return folder


def cached_files(tmp_path: Path) -> list[Path]:
    d = tmp_path / "cache" / "splits"
    return sorted(d.iterdir()) if d.is_dir() else []


# ------------------------------------------------------------------------------------ folders
def test_imagenet_wnids_are_in_label_order():
    assert len(IMAGENET.folder_ids) == 1000 and len(set(IMAGENET.folder_ids)) == 1000
    assert list(IMAGENET.folder_ids) == sorted(IMAGENET.folder_ids)  # ImageNet's labels: sorted synsets
    for k, name, wnid in ((0, "tench", TENCH), (1, "goldfish", GOLDFISH), (207, "golden retriever", RETRIEVER),
                          (999, "toilet tissue", TISSUE)):
        assert IMAGENET.classes[k] == name and IMAGENET.folder_ids[k] == wnid
        assert IMAGENET.folder_index()[wnid] == IMAGENET.folder_index()[name] == k
    with pytest.raises(ValueError, match="one per class"):
        datasets.DatasetSpec("two", "Two", ("a", "b"), folder_ids=("x",))
    with pytest.raises(ValueError, match="is the name of class 0"):
        datasets.DatasetSpec("two", "Two", ("a", "b"), folder_ids=("x", "a"))


def test_a_wnid_subset_folder_loads_with_full_imagenet_labels(tmp_path, caplog):
    root = tmp_path / "imagenette"
    make_split(root / "test", [TISSUE, TENCH, RETRIEVER], per_class=2)
    with caplog.at_level(logging.INFO, logger="backend.core.data"):
        s = load_split(root, "test", "imagenet")
    assert s.classes == IMAGENET.classes  # the full list: an ImageNet model's logits line up
    assert s.labels.tolist() == [0, 0, 207, 207, 999, 999]  # folders sorted by wnid, labels in the 1000
    assert s.images.shape == (6, 224, 224, 3)
    assert s.variant == "imagenet-subset3-imagefolder"
    assert "3 of ImageNet-1k's 1000 classes" in caplog.text
    data.clear_memory_cache()
    again = load_split(root, "test", "imagenet")  # from the disk cache: same labels, variant, classes
    assert again.labels.tolist() == s.labels.tolist() and again.variant == s.variant and again.classes == s.classes
    assert torch.equal(again.images, s.images)


def test_names_and_ids_mix_and_a_class_named_twice_is_refused(tmp_path):
    root = tmp_path / "mixed"
    make_split(root / "test", [GOLDFISH, "golden retriever", TENCH, "toilet tissue"], per_class=1)
    s = load_split(root, "test", "imagenet")
    # sorted folder names: 'golden retriever', n01440764, n01443537, 'toilet tissue'
    assert s.labels.tolist() == [207, 0, 1, 999] and s.variant == "imagenet-subset4-imagefolder"
    twice = tmp_path / "twice"
    make_split(twice / "test", [TENCH, "tench", GOLDFISH], per_class=1)
    with pytest.raises(ValueError, match=r"\['tench'\] have two folders"):
        load_split(twice, "test", "imagenet")


def test_a_cifar10_subset_loads_and_an_exact_tree_keeps_its_cache_key(tmp_path):
    sub = tmp_path / "catdog"
    make_split(sub / "test", ["dog", "cat"], per_class=2, side=32)
    s = load_split(sub, "test", "cifar10")
    assert s.classes == CIFAR10.classes and s.labels.tolist() == [3, 3, 5, 5]
    assert s.variant == "cifar10-subset2-imagefolder" and s.images.shape == (4, 32, 32, 3)
    exact = tmp_path / "exact"
    make_split(exact / "test", CIFAR10.classes, per_class=1, side=32)
    e = load_split(exact, "test", "cifar10")
    assert e.labels.tolist() == list(range(10)) and e.variant == "cifar10-imagefolder"
    # the key the decoded CIFAR caches had before folders by id and subsets existed
    src = imagefiles.Source("imagefolder", exact, exact / "test")
    ident = json.dumps([1, "imagefolder", str((exact / "test").resolve()), "test", "cifar10",
                        imagefiles.fingerprint(src)])
    stem = f"cifar10-test-{hashlib.sha256(ident.encode()).hexdigest()[:24]}"
    assert (tmp_path / "cache" / "splits" / f"{stem}.json").is_file()
    assert "folders" not in json.loads((tmp_path / "cache" / "splits" / f"{stem}.json").read_text())


def test_unknown_folder_names_are_refused_and_nothing_is_cached(tmp_path):
    root = tmp_path / "bad"
    make_split(root / "test", [TENCH, "not_a_class", "n99999999", GOLDFISH], per_class=1)
    with pytest.raises(ValueError, match=r"2 of 4 class folders are not ImageNet-1k's.*"
                                         r"\['n99999999', 'not_a_class'\].*n01440764"):
        load_split(root, "test", "imagenet")
    assert cached_files(tmp_path) == []


# --------------------------------------------------------------------------------------- val/
def test_val_is_the_test_split_when_there_is_no_test_folder(tmp_path):
    root = tmp_path / "ilsvrc"
    make_split(root / "val", [TENCH, GOLDFISH], per_class=2)
    s = load_split(root, "test", "imagenet")
    assert s.source == str((root / "val").resolve()) and s.labels.tolist() == [0, 0, 1, 1]
    assert available_sources(root, "imagenet")["test"]["available"]
    direct = load_split(root / "val", "test", "imagenet")  # the val folder itself as the root
    assert direct.labels.tolist() == [0, 0, 1, 1] and direct.source == s.source
    with pytest.raises(DataNotFoundError, match=r"no train/ folder"):
        load_split(root, "train", "imagenet")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataNotFoundError, match=r"No ImageNet-1k data found.*no test/ \(or val/\) folder"):
        load_split(empty, "test", "imagenet")
    assert "no test/ (or val/) folder" in available_sources(empty, "imagenet")["test"]["message"]
    make_split(root / "test", [GOLDFISH], per_class=1)  # test/ wins over val/ when both exist
    data.clear_memory_cache()
    assert load_split(root, "test", "imagenet").labels.tolist() == [1]


# ---------------------------------------------------------------------------------- manifests
def test_a_manifest_states_an_unregistered_data_set_image_size(tmp_path):
    root = tmp_path / "mine"
    make_split(root / "train", ["apple", "pear"], per_class=2, side=60)
    assert load_split(root, "train", "myfruit").images.shape == (4, 32, 32, 3)  # no manifest: 32
    (root / "dataset.json").write_text(json.dumps({"label": "My fruit", "image_size": 48,
                                                   "mean": [0.4, 0.5, 0.6], "name": "myfruit"}))
    data.clear_memory_cache()
    s = load_split(root, "train", "myfruit")
    assert s.images.shape == (4, 48, 48, 3) and s.classes == ("apple", "pear") and s.labels.tolist() == [0, 0, 1, 1]
    assert datasets.image_size_of("myfruit", root) == 48 and datasets.image_size_of("myfruit") == 32
    spec = datasets.spec_for("myfruit", s.classes, root)
    assert (spec.label, spec.image_size, spec.mean, spec.classes) == ("My fruit", 48, (0.4, 0.5, 0.6), s.classes)
    assert datasets.find_dataset("myfruit") is None  # described, not registered
    # a registered data set ignores a manifest: its side is the registry's
    make_split(root / "test", [TENCH, GOLDFISH], per_class=1)
    assert load_split(root, "test", "imagenet").images.shape[1] == 224


@pytest.mark.parametrize("manifest, match", [
    ("[48]", "must hold a JSON object"),
    ("{not json", "not a readable JSON file"),
    ('{"image_size": 48, "side": 3}', r"unknown key\(s\) \['side'\]"),
    ('{"image_size": 4}', r"image_size must be an integer in \[8, 1024\]"),
    ('{"image_size": 48.0}', "image_size must be an integer"),
    ('{"image_size": true}', "image_size must be an integer"),
    ('{"mean": [0.5, 0.5]}', "mean must be a list of three numbers"),
    ('{"mean": [0.5, 0.5, 2]}', "mean must be a list of three numbers"),
    ('{"label": ""}', "label must be a text"),
    ('{"name": "other"}', "this data root is data set 'other', not 'myfruit'"),
])
def test_bad_manifests_are_refused_before_anything_is_decoded(tmp_path, manifest, match):
    root = tmp_path / "mine"
    make_split(root / "train", ["apple", "pear"], per_class=1)
    (root / "dataset.json").write_text(manifest)
    with pytest.raises(ValueError, match=match) as info:
        load_split(root, "train", "myfruit")
    assert "dataset.json" in str(info.value)
    assert cached_files(tmp_path) == []


# --------------------------------------------------------------------------------- evaluation
@pytest.fixture
def imagenet_card(tmp_path, monkeypatch):
    """A random-weights ImageNet-card model (1000 classes, 224 px), imported as an entry point."""
    from backend.imports.sources import import_model

    monkeypatch.setenv(adapters.TRUST_ENV, ENTRY)
    torch.manual_seed(0)
    out = import_model("entrypoint", ENTRY, kwargs={"num_classes": 1000}, dataset="imagenet",
                       root=tmp_path / "ckpts", model_id="tiny-in")
    card = read_card(out)
    assert card["dataset"] == "imagenet" and card["input_size"] == 224 and len(card["classes"]) == 1000
    return out


@pytest.mark.skipif(not HAS_FOOLBOX, reason="foolbox (which ships the offline samples) is not installed")
def test_evaluate_on_the_offline_samples_writes_their_variant_and_n(imagenet_card, capsys):
    from backend.eval.evaluate import evaluate_checkpoint, main

    _load_table = importlib.util.spec_from_file_location(
        "results_table", Path(__file__).resolve().parent.parent / "scripts" / "results_table.py")
    # the default --n-pgd (2000) is capped at the 20 images there are: clean and PGD-20 on all of them
    assert main(["--checkpoint", str(imagenet_card), "--source", "samples", "--device", "cpu", "--threads", "1",
                 "--batch-size", "20"]) == 0
    m = read_card(imagenet_card)["metrics"]
    assert m["n_clean"] == m["n_pgd20"] == 20 and 0 <= m["pgd20"] <= m["clean"] <= 1
    assert m["eval"]["data_variant"] == "imagenet-foolbox-samples" and m["eval"]["split"] == "samples"
    out = capsys.readouterr().out
    assert "imagenet-foolbox-samples, samples split" in out and len(out.splitlines()) < 40  # measured classes only
    with pytest.raises(ValueError, match="pass no data root"):
        evaluate_checkpoint(imagenet_card, data="x", source="samples", write=False)
    with pytest.raises(SystemExit):  # the samples and a data root exclude each other
        main(["--checkpoint", str(imagenet_card), "--source", "samples", "--data", "x", "--n-pgd", "0"])
    mod = importlib.util.module_from_spec(_load_table)
    _load_table.loader.exec_module(mod)
    row = next(r for r in mod.rows(imagenet_card.parent) if r.startswith("| imported "))
    assert "| 20 / 20 / 0 on imagenet-foolbox-samples |" in row and row.startswith("| imported | entrypoint |")


def test_evaluate_on_a_wnid_val_folder_of_some_classes(imagenet_card, tmp_path, capsys):
    from backend.eval.evaluate import main

    root = tmp_path / "imagenette"
    make_split(root / "val", [TENCH, RETRIEVER, TISSUE], per_class=2, side=48)
    assert main(["--checkpoint", str(imagenet_card), "--data", str(root), "--n-pgd", "4", "--device", "cpu",
                 "--threads", "1"]) == 0
    m = read_card(imagenet_card)["metrics"]
    assert m["n_clean"] == 6 and m["n_pgd20"] == 4
    assert m["eval"]["data_variant"] == "imagenet-subset3-imagefolder" and m["eval"]["split"] == "test"
    measured = {c for c, v in m["per_class_clean"].items() if v is not None}
    assert measured == {"tench", "golden retriever", "toilet tissue"}
    assert "golden retriever" in capsys.readouterr().out
