"""Data loading: ImageFolder trees, disk + memory caches, missing data, foolbox samples, index helpers."""
from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from backend.core import data, imagefiles
from backend.core.data import (
    CIFAR10_CLASSES,
    DataNotFoundError,
    Split,
    available_sources,
    balanced_indices,
    load_split,
    resolve_root,
    sample_images,
    to_float,
    to_uint8,
    train_val_indices,
)

REPO = Path(__file__).resolve().parent.parent
TOY_CLASSES = ("cat", "dog", "frog")


@pytest.fixture(autouse=True)
def _fresh_memory(monkeypatch):
    monkeypatch.delenv("RSUPCON_DATA", raising=False)
    monkeypatch.delenv("ROBUSTLENS_CACHE", raising=False)
    data.clear_memory_cache()
    yield
    data.clear_memory_cache()


def make_tree(root: Path, classes=TOY_CLASSES, per_class=4, fmt="mixed", seed=0) -> dict:
    """root/{train,test}/<class>/<k>.png|jpg of random pixels; returns {path: array} of the PNG 32x32 ones."""
    rng = np.random.default_rng(seed)
    exact = {}
    for split in ("train", "test"):
        for c in classes:
            (root / split / c).mkdir(parents=True, exist_ok=True)
            for k in range(per_class):
                size = (32, 32) if k % 2 == 0 else (40, 24)       # odd files are resized on load
                arr = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
                jpg = fmt == "jpeg" or (fmt == "mixed" and k == 3)
                path = root / split / c / f"{k:04d}.{'jpg' if jpg else 'png'}"
                Image.fromarray(arr).save(path, **({"quality": 75} if jpg else {}))
                if not jpg and size == (32, 32):
                    exact[path] = arr
    return exact


def test_imagefolder_loads_and_caches_outside_repo(tmp_path, monkeypatch):
    exact = make_tree(tmp_path / "toy")
    cache = tmp_path / "cache"
    s = load_split(tmp_path / "toy", "train", dataset="toy", cache_dir=cache)
    assert isinstance(s, Split) and len(s) == 12
    assert s.images.dtype == torch.uint8 and s.images.shape == (12, 32, 32, 3)
    assert s.labels.dtype == torch.int64 and s.labels.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    assert s.classes == TOY_CLASSES and s.dataset == "toy" and s.split == "train"
    assert s.variant == "toy-imagefolder"
    files = sorted((tmp_path / "toy" / "train").rglob("*.*"))
    for i, f in enumerate(files):  # sorted class, then file order; lossless files are pixel-exact
        if f in exact:
            np.testing.assert_array_equal(s.images[i].numpy(), exact[f])
    cached = sorted(p.name for p in (cache / "splits").iterdir())
    assert len(cached) == 3 and any(n.endswith(".images.npy") for n in cached)
    assert not any(REPO in p.resolve().parents for p in cache.rglob("*"))

    # the same call in this process returns the same object without touching the disk
    assert load_split(tmp_path / "toy", "train", dataset="toy", cache_dir=cache) is s

    # a new process (memory cleared) reads the disk cache: no decoding at all
    def no_decode(paths, size=32):
        raise AssertionError("decoded although a valid cache exists")
    data.clear_memory_cache()
    monkeypatch.setattr(data, "decode_imagefolder", no_decode)
    s2 = load_split(tmp_path / "toy", "train", dataset="toy", cache_dir=cache)
    assert s2 is not s and torch.equal(s2.images, s.images) and torch.equal(s2.labels, s.labels)
    assert (s2.classes, s2.variant, s2.source) == (s.classes, s.variant, s.source)

    # adding a file makes both caches stale: the split is decoded again and has 13 images
    calls = []
    def counting_decode(paths, size=32):
        calls.append(len(paths))
        return data.decode_paths(paths, size)
    monkeypatch.setattr(data, "decode_imagefolder", counting_decode)
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(tmp_path / "toy" / "train" / "dog" / "0099.png")
    s3 = load_split(tmp_path / "toy", "train", dataset="toy", cache_dir=cache)
    assert calls == [13] and len(s3) == 13 and s3.labels.tolist().count(1) == 5
    assert (s3.images[8].numpy() == 0).all()  # dog's new file sorts last among dog's files


def test_cache_env_and_repo_guard(tmp_path, monkeypatch):
    make_tree(tmp_path / "toy", per_class=2)
    monkeypatch.setenv("ROBUSTLENS_CACHE", str(tmp_path / "envcache"))
    load_split(tmp_path / "toy", "test", dataset="toy")
    assert len(list((tmp_path / "envcache" / "splits").glob("*.json"))) == 1
    data.clear_memory_cache()
    inside = REPO / "tmp-cache-must-not-exist"
    with pytest.raises(ValueError, match="inside the repository"):
        load_split(tmp_path / "toy", "test", dataset="toy", cache_dir=inside)
    assert not inside.exists()


def test_variants(tmp_path):
    make_tree(tmp_path / "jpg", fmt="jpeg", per_class=2)
    c = tmp_path / "c"
    assert load_split(tmp_path / "jpg", "test", dataset="toy", cache_dir=c).variant == "toy-jpeg75"
    make_tree(tmp_path / "named", per_class=2)
    (tmp_path / "named" / "VARIANT").write_text("toy-custom-v2\n")
    assert load_split(tmp_path / "named", "test", dataset="toy", cache_dir=c).variant == "toy-custom-v2"
    (tmp_path / "named" / "VARIANT").write_text("Not A Name!")
    with pytest.raises(ValueError, match="VARIANT"):
        load_split(tmp_path / "named", "train", dataset="toy", cache_dir=tmp_path / "c")


def test_class_folders_must_match_dataset(tmp_path):
    # none of these is a CIFAR-10 or CIFAR-100 class (some of a data set's classes would load as a
    # subset of it: tests/test_dataset_folders.py)
    make_tree(tmp_path / "toy", classes=("gnu", "yak", "emu"), per_class=1)
    with pytest.raises(ValueError, match="not CIFAR-10's"):
        load_split(tmp_path / "toy", "train", dataset="cifar10", cache_dir=tmp_path / "c")
    with pytest.raises(ValueError, match="100"):
        load_split(tmp_path / "toy", "train", dataset="cifar100", cache_dir=tmp_path / "c")
    for bad in ({"split": "val"}, {"dataset": "CIFAR 10"}):
        with pytest.raises(ValueError, match="split|dataset"):
            load_split(tmp_path / "toy", **{"split": "train", **bad}, cache_dir=tmp_path / "c")


def test_corrupt_file_is_named(tmp_path):
    make_tree(tmp_path / "toy", per_class=1)
    bad = tmp_path / "toy" / "train" / "cat" / "0001.png"
    bad.write_bytes(b"not a png")
    with pytest.raises(ValueError, match=re.escape(str(bad))):
        load_split(tmp_path / "toy", "train", dataset="toy", cache_dir=tmp_path / "c")


def test_missing_data_explains_how_to_provide_it(tmp_path, monkeypatch):
    for root in (tmp_path / "nope", tmp_path):  # absent; present but with no split folder
        with pytest.raises(DataNotFoundError) as e:
            load_split(root, "train", cache_dir=tmp_path / "c")
        msg = str(e.value)
        assert str(root) in msg
        for needle in ("RSUPCON_DATA=", "ImageFolder", "download=True", "cifar10_pack.py tree DEST"):
            assert needle in msg
    assert isinstance(e.value, FileNotFoundError)
    # a torchvision folder that is not the genuine data is refused by torchvision's md5 check
    (tmp_path / "tv" / "cifar-10-batches-py").mkdir(parents=True)
    (tmp_path / "tv" / "cifar-10-batches-py" / "data_batch_1").write_bytes(b"junk")
    with pytest.raises(DataNotFoundError, match="torchvision could not read cifar10"):
        load_split(tmp_path / "tv", "train", cache_dir=tmp_path / "c")
    monkeypatch.setattr(imagefiles, "SHARED_CIFAR", tmp_path / "absent")
    assert resolve_root() is None
    with pytest.raises(DataNotFoundError, match="No CIFAR data set configured"):
        load_split(None, "test")


def test_resolve_root_and_env(tmp_path, monkeypatch):
    make_tree(tmp_path / "toy", per_class=1)
    monkeypatch.setenv("RSUPCON_DATA", str(tmp_path / "toy"))
    assert resolve_root() == tmp_path / "toy"
    assert resolve_root(tmp_path / "other") == tmp_path / "other"  # explicit wins over the env
    s = load_split(split="test", dataset="toy", cache_dir=tmp_path / "c")
    assert len(s) == 3 and s.source == str((tmp_path / "toy" / "test").resolve())
    avail = available_sources(dataset="toy")
    assert avail["root"] == str(tmp_path / "toy")
    assert avail["train"]["available"] and avail["test"]["available"]
    # offline samples belong to a data set (the registry's DatasetSpec.samples): CIFAR-10 has foolbox's
    assert not avail["samples"]["available"] and available_sources()["samples"]["available"]
    missing = available_sources(tmp_path / "nope")
    assert not missing["train"]["available"] and "RSUPCON_DATA=" in missing["test"]["message"]


def test_sample_images_from_foolbox():
    s = sample_images()
    assert s.images.dtype == torch.uint8 and s.images.shape == (20, 32, 32, 3)
    assert s.split == "samples" and s.variant == "cifar10-foolbox-samples" and s.classes == CIFAR10_CLASSES
    names = sorted(p for p in os.listdir(s.source) if re.match(r"^cifar10_\d+_\d\.png$", p))
    assert len(names) == 20 and REPO not in Path(s.source).resolve().parents
    assert s.labels.tolist() == [int(n[:-4].split("_")[2]) for n in names]  # zero-padded: name order = index
    first = np.asarray(Image.open(Path(s.source) / names[0]).convert("RGB"))
    np.testing.assert_array_equal(s.images[0].numpy(), first)
    assert s.images.float().std() > 30  # real photos, not a blank placeholder


def test_sample_images_without_foolbox(monkeypatch):
    monkeypatch.setattr(data, "_SAMPLES", {})
    monkeypatch.setattr(data.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(DataNotFoundError, match="pip install"):
        sample_images()
    assert not available_sources()["samples"]["available"]


def test_split_helpers_and_conversions():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (6, 32, 32, 3), dtype=torch.uint8, generator=g)
    s = Split(x, torch.arange(6) % 3, TOY_CLASSES, "toy", "test", "toy-imagefolder", "memory")
    f = s.float_images()
    assert f.shape == (6, 3, 32, 32) and f.dtype == torch.float32 and 0 <= f.min() and f.max() <= 1
    assert torch.equal(to_uint8(f), x) and torch.equal(f[:, 1], x[..., 1].float() / 255)
    assert torch.equal(to_uint8(to_float(x) + 0.4 / 255), x)  # rounding, not truncation
    assert torch.equal(s.float_images([4, 1]), f[[4, 1]]) and s.float_images(2).shape == (1, 3, 32, 32)
    sub = s.subset(np.array([5, 0]))
    assert len(sub) == 2 and sub.labels.tolist() == [2, 0] and torch.equal(sub.images[0], x[5])
    assert len(s.subset(np.arange(6) < 2)) == 2
    for bad in ([6], [0.5]):
        with pytest.raises(ValueError):
            s.subset(bad)
    with pytest.raises(ValueError, match="uint8"):
        Split(x.float(), torch.arange(6), TOY_CLASSES, "toy", "test", "v", "s")
    with pytest.raises(ValueError, match="labels must lie"):
        Split(x, torch.arange(6), TOY_CLASSES, "toy", "test", "v", "s")
    with pytest.raises(ValueError, match="uint8"):
        to_float(f)
    with pytest.raises(ValueError, match="float"):
        to_uint8(x)


def test_train_val_indices():
    tr, va = train_val_indices(50_000)
    assert len(tr) == 49_000 and len(va) == 1_000 and tr.dtype == va.dtype == np.int64
    assert np.intersect1d(tr, va).size == 0 and np.array_equal(np.union1d(tr, va), np.arange(50_000))
    assert np.array_equal(train_val_indices(50_000)[1], va)
    assert not np.array_equal(train_val_indices(50_000, seed=1)[1], va)
    labels = np.repeat(np.arange(10), 100)
    tr, va = train_val_indices(1000, n_val=105, labels=labels)
    counts = np.bincount(labels[va], minlength=10)
    assert len(va) == 105 and counts.min() == 10 and counts.max() == 11
    for bad in ({"n_val": 1000}, {"n_val": -1}, {"labels": labels[:5]}):
        with pytest.raises(ValueError):
            train_val_indices(1000, **bad)


def test_balanced_indices():
    labels = torch.tensor([0] * 50 + [1] * 30 + [2] * 3)
    idx = balanced_indices(labels, 20, seed=3)
    assert len(idx) == 20 and len(set(idx.tolist())) == 20
    assert np.bincount(labels[idx].numpy(), minlength=3).tolist() == [9, 8, 3]  # class 2 runs out
    assert labels[balanced_indices(labels, 6)].tolist() == [0, 1, 2, 0, 1, 2]   # every prefix balanced
    assert np.array_equal(balanced_indices(labels, 20, seed=3), idx)
    assert len(balanced_indices(labels, len(labels))) == len(labels)
    with pytest.raises(ValueError):
        balanced_indices(labels, 84)


def test_real_cifar10_test_split(cifar_root, tmp_path):
    s = load_split(cifar_root, "test", cache_dir=tmp_path / "cache")
    assert len(s) == 10_000 and s.images.shape == (10_000, 32, 32, 3) and s.images.dtype == torch.uint8
    assert s.classes == CIFAR10_CLASSES
    assert torch.bincount(s.labels, minlength=10).tolist() == [1000] * 10
    mean = s.images.float().mean(dim=(0, 1, 2)) / 255
    assert torch.allclose(mean, torch.tensor([0.494, 0.485, 0.450]), atol=0.01), mean
    assert s.variant.startswith("cifar10-")
    if Path(cifar_root).resolve() == data.SHARED_CIFAR.resolve():
        assert s.variant == "cifar10-jpeg75"
