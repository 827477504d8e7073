"""Corruptions (backend.core.corruptions), the official-folder reader, mCA (backend.eval.mca) and OOD
detection (backend.eval.ood), on seeded synthetic images and tiny models."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from backend.core.checkpoints import load_checkpoint, read_card
from backend.core.corruptions import (
    CORRUPTIONS,
    GROUPS,
    SEVERITIES,
    check_official,
    corrupt,
    official_labels,
    read_official,
)
from backend.core.data import Split, sample_images
from backend.eval.evaluate import evaluate_checkpoint, format_extra, main
from backend.eval.mca import corruption_accuracy
from backend.eval.ood import SYNTHETIC, detection_metrics, ood_detection, outlier_sets, synthetic_set
from backend.train.inputs import synthetic_task
from tests.helpers import CIFAR10_CLASSES, tiny_split, write_tiny_checkpoint


def _images(n=4, side=32) -> torch.Tensor:
    """n of the CIFAR-10 test images the foolbox package ships (offline), at `side` px."""
    x = sample_images("cifar10").float_images(np.arange(n))
    return x if side == 32 else torch.nn.functional.interpolate(x, size=side, mode="bilinear", align_corners=False)


def test_the_fifteen_standard_corruptions_in_four_groups():
    assert len(CORRUPTIONS) == 15 and len(set(CORRUPTIONS)) == 15
    assert sorted(c for g in GROUPS.values() for c in g) == sorted(CORRUPTIONS)
    assert SEVERITIES == (1, 2, 3, 4, 5)


@pytest.mark.parametrize("name", CORRUPTIONS)
def test_each_corruption_is_deterministic_keeps_shape_and_range_and_grows_with_severity(name):
    x = _images()
    change = []
    for s in SEVERITIES:
        y = corrupt(x, name, s, seed=3)
        assert y.shape == x.shape and y.dtype == torch.float32
        assert float(y.min()) >= 0 and float(y.max()) <= 1
        assert torch.equal(y, torch.round(y * 255) / 255)  # 8-bit levels, as the official arrays
        assert torch.equal(y, corrupt(x, name, s, seed=3))  # same seed, same images
        change.append(float((y - x).abs().mean()))
    assert change[0] > 0
    if name == "elastic_transform":
        # CIFAR-10-C's published elastic parameters trade a large affine jitter at severity 1 (8% of the
        # side, no local warp) for a local warp at 5 (affine jitter 3%): mean pixel change is not monotone
        # there; severity 5 still moves pixels locally where severity 1 does not
        assert change[4] > 0 and change[0] != change[4]
    else:
        assert change[0] < change[4], change
    if name not in ("brightness", "contrast", "pixelate", "jpeg_compression", "zoom_blur", "defocus_blur"):
        # the random ones differ between seeds
        assert not torch.equal(corrupt(x, name, 3, seed=3), corrupt(x, name, 3, seed=4))


def test_corruptions_apply_at_other_sides_and_validate_input():
    x = _images(n=2, side=64)
    for name in CORRUPTIONS:
        y = corrupt(x, name, 2)
        assert y.shape == x.shape and 0 <= float(y.min()) <= float(y.max()) <= 1
    with pytest.raises(ValueError, match="unknown corruption 'rain'"):
        corrupt(x, "rain", 1)
    with pytest.raises(ValueError, match="severity must be an int in 1..5, got 6"):
        corrupt(x, "fog", 6)
    with pytest.raises(ValueError, match="float tensor"):
        corrupt(x[:, :1], "fog", 1)
    with pytest.raises(ValueError, match="seed must be an int >= 0"):
        corrupt(x, "fog", 1, seed=-1)
    assert corrupt(x[:0], "fog", 1).shape == (0, 3, 64, 64)


def _official_tree(root, n=6, side=32):
    """A CIFAR-10-C-shaped folder: pixel value = 10 * severity + corruption index (+ the image index in
    the red channel), labels image % 3, so that every read can be checked."""
    root.mkdir(parents=True, exist_ok=True)
    labels = np.tile(np.arange(n) % 3, 5).astype(np.uint8)
    np.save(root / "labels.npy", labels)
    for k, c in enumerate(CORRUPTIONS):
        a = np.zeros((5 * n, side, side, 3), np.uint8)
        for s in SEVERITIES:
            for i in range(n):
                a[(s - 1) * n + i] = 10 * s + k
                a[(s - 1) * n + i, :, :, 0] = i
        np.save(root / f"{c}.npy", a)
    np.save(root / "speckle_noise.npy", np.zeros((5 * n, side, side, 3), np.uint8))  # extra files are ignored
    return root


def test_official_folder_reader_on_a_small_synthetic_tree(tmp_path):
    root = _official_tree(tmp_path / "CIFAR-10-C")
    assert check_official(root) == (root, 6)
    assert official_labels(root).tolist() == [0, 1, 2, 0, 1, 2]
    a = read_official(root, "fog", 4, [5, 1])
    k = CORRUPTIONS.index("fog")
    assert a.shape == (2, 32, 32, 3) and a.dtype == np.uint8
    assert a[0, 0, 0].tolist() == [5, 40 + k, 40 + k] and a[1, 0, 0].tolist() == [1, 40 + k, 40 + k]
    with pytest.raises(ValueError, match=r"indices must lie in \[0, 6\)"):
        read_official(root, "fog", 1, [6])
    (root / "frost.npy").unlink()
    with pytest.raises(ValueError, match="lacks frost.npy"):
        check_official(root)
    with pytest.raises(ValueError, match="does not exist"):
        check_official(tmp_path / "nowhere")


def test_official_folder_with_bad_shapes_is_refused(tmp_path):
    root = _official_tree(tmp_path / "c")
    np.save(root / "contrast.npy", np.zeros((7, 32, 32, 3), np.uint8))
    with pytest.raises(ValueError, match="contrast.npy is uint8 \\(7, 32, 32, 3\\)"):
        check_official(root)
    np.save(root / "labels.npy", np.zeros(7, np.uint8))
    with pytest.raises(ValueError, match="labels.npy has shape"):
        check_official(root)


class _ColourModel(torch.nn.Module):
    """Predicts class 0, 1 or 2 from the mean green level: the official tree's severity and corruption
    code (10 * severity + k) decide its answer, so accuracies can be checked by hand."""
    input_size = 32

    def forward(self, x):
        g = x[:, 1].mean(dim=(1, 2)) * 255  # (N,)
        cls = torch.round(g).long() % 3
        return torch.nn.functional.one_hot(cls, 10).float()


def test_mca_from_an_official_tree_is_the_mean_of_the_cells(tmp_path):
    root = _official_tree(tmp_path / "c")
    r = corruption_accuracy(_ColourModel().eval(), None, n=6, root=root)
    labels = np.arange(6) % 3
    for k, c in enumerate(CORRUPTIONS):
        for s in SEVERITIES:
            want = float(((10 * s + k) % 3 == labels).mean())
            assert r["corruptions"]["accuracy"][c][s - 1] == pytest.approx(want)
    cells = [a for row in r["corruptions"]["accuracy"].values() for a in row]
    assert r["mca"] == pytest.approx(np.mean(cells)) and r["n_mca"] == 6
    assert r["corruptions"]["variant"].startswith("official") and r["corruptions"]["clean"] is None


def test_mca_regenerated_on_a_tiny_model_is_reproducible_and_cancellable(tmp_path):
    from backend.core.errors import Cancelled

    model = load_checkpoint(write_tiny_checkpoint(tmp_path, "m")).model
    split = tiny_split()
    kw = dict(n=20, corruptions=("gaussian_noise", "fog"), severities=(1, 5))
    r = corruption_accuracy(model, split, batch_size=7, **kw)
    assert r == corruption_accuracy(model, split, batch_size=16, **kw)  # batching, seed
    assert set(r["corruptions"]["accuracy"]) == {"gaussian_noise", "fog"}
    assert all(0 <= a <= 1 for v in r["corruptions"]["accuracy"].values() for a in v)
    assert r["corruptions"]["variant"].startswith("regenerated") and 0 <= r["corruptions"]["clean"] <= 1
    with pytest.raises(Cancelled):
        corruption_accuracy(model, split, should_stop=lambda: True, **kw)
    with pytest.raises(ValueError, match="unknown corruption 'rain'"):
        corruption_accuracy(model, split, n=4, corruptions=("rain",))


def test_auroc_is_one_on_a_separable_pair_and_a_half_on_identical_sets():
    s_in = torch.linspace(0, 1, 200)
    assert detection_metrics(s_in, s_in + 2) == {"auroc": 1.0, "fpr95": 0.0}
    same = detection_metrics(s_in, s_in.clone())
    assert same["auroc"] == pytest.approx(0.5, abs=0.01) and same["fpr95"] > 0.9
    with pytest.raises(ValueError, match="at least one image"):
        detection_metrics(s_in, s_in[:0])


class _Detector(torch.nn.Module):
    """Confident (logit 10 on class 0) on images whose mean is below 0.5, uniform above: a model for
    which dark images are in-distribution."""

    def forward(self, x):
        dark = (x.mean(dim=(1, 2, 3)) < 0.5).float()
        out = torch.zeros(len(x), 10)
        out[:, 0] = 10 * dark
        return out


def test_ood_detection_of_a_model_separates_a_toy_pair_and_not_identical_sets():
    n = 64
    g = torch.Generator().manual_seed(0)
    dark = (torch.rand(n, 32, 32, 3, generator=g) * 100).to(torch.uint8)  # in-distribution: dark
    split = Split(dark, torch.arange(n) % 10, tuple(CIFAR10_CLASSES), "cifar10", "test", "toy", "toy")
    bright = 0.6 + 0.4 * torch.rand(n, 3, 32, 32, generator=g)
    r = ood_detection(_Detector().eval(), split, {"bright": bright, "same": split.float_images()}, n_in=n)
    assert r["ood"]["sets"]["bright"]["auroc_msp"] == pytest.approx(1.0)
    assert r["ood"]["sets"]["bright"]["auroc_energy"] == pytest.approx(1.0)
    assert r["ood"]["sets"]["bright"]["fpr95_msp"] == pytest.approx(0.0)
    assert r["ood"]["sets"]["same"]["auroc_msp"] == pytest.approx(0.5)
    assert r["mauroc"] == pytest.approx(0.75) and r["n_ood_in"] == n


def test_outlier_sets_are_named_seeded_and_in_range(tmp_path):
    from PIL import Image

    folder = tmp_path / "svhn-like"
    (folder / "a").mkdir(parents=True)
    for i in range(5):
        Image.fromarray(np.full((40, 40, 3), 30 * i, np.uint8)).save(folder / "a" / f"{i}.png")
    sets = outlier_sets("cifar10", 32, [str(folder)], n=3, seed=1)
    assert list(sets)[0] == "svhn-like" and sets["svhn-like"].shape == (3, 3, 32, 32)
    assert set(SYNTHETIC) <= set(sets) and all(sets[s].shape == (3, 3, 32, 32) for s in SYNTHETIC)
    assert "cifar10-samples" not in sets  # a model's own data set is never its outlier set
    for x in sets.values():
        assert 0 <= float(x.min()) <= float(x.max()) <= 1
    assert torch.equal(synthetic_set("blobs", 4, 32, seed=2), synthetic_set("blobs", 4, 32, seed=2))
    with pytest.raises(ValueError, match="does not exist"):
        outlier_sets("cifar10", 32, [str(tmp_path / "empty")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no image files"):
        outlier_sets("cifar10", 32, [str(tmp_path / "empty")])


def test_evaluate_writes_mca_and_mauroc_into_the_card(tmp_path):
    ckpt = write_tiny_checkpoint(tmp_path, "m")
    root = _official_tree(tmp_path / "CIFAR-10-C", n=10)
    before = read_card(ckpt)["metrics"]
    r = evaluate_checkpoint(ckpt, split=tiny_split(), corruptions=str(root), ood=[], n_corrupt=10, n_ood=8,
                            standard=False, batch_size=8)
    card = read_card(ckpt)
    assert card["metrics"]["mca"] == r["mca"] and card["metrics"]["n_mca"] == 10
    assert card["metrics"]["corruptions"]["variant"] == "official: CIFAR-10-C (.npy folder)"
    assert card["metrics"]["mauroc"] == r["mauroc"] and len(card["metrics"]["ood"]["sets"]) >= 3
    assert all(card["metrics"].get(k) == v for k, v in before.items() if k not in r)  # the rest is kept
    json.dumps(card)  # plain data
    text = format_extra(r)
    assert "mCA" in text and "jpeg_compression" in text and "mAUROC (MSP)" in text and "blobs" in text
    with pytest.raises(ValueError, match="does not exist"):
        evaluate_checkpoint(ckpt, split=tiny_split(), corruptions=str(tmp_path / "nowhere"), standard=False)
    with pytest.raises(ValueError, match="needs corruptions or ood"):
        evaluate_checkpoint(ckpt, split=tiny_split(), standard=False)
    assert read_card(ckpt) == card  # a refused run changes nothing


def test_evaluate_cli_prints_the_ood_table(tmp_path, monkeypatch, capsys):
    from PIL import Image

    monkeypatch.setenv("ROBUSTLENS_CACHE", str(tmp_path / "cache"))
    x, y = synthetic_task(20, seed=3)
    for i, (img, label) in enumerate(zip(x, y)):
        d = tmp_path / "tree" / "test" / CIFAR10_CLASSES[int(label)]
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img.permute(1, 2, 0).numpy()).save(d / f"{i}.png")
    ckpt = write_tiny_checkpoint(tmp_path / "ckpts", "m")
    argv = ["--checkpoint", str(ckpt), "--data", str(tmp_path / "tree"), "--skip-standard", "--ood", "--n-ood", "8",
            "--device", "cpu"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "mAUROC (MSP)" in out and "blobs" in out and "mnist-samples" in out
    assert read_card(ckpt)["metrics"]["ood"]["n_in"] == 8
    with pytest.raises(SystemExit):
        main(["--checkpoint", str(ckpt), "--data", str(tmp_path / "tree"), "--skip-standard"])
    assert "needs corruptions or ood" in capsys.readouterr().err


def test_streaks_above_64_px_equal_the_dense_kernel():
    """Motion blur and snow streaks above 64 px are a sum of shifted images; they must equal the dense
    convolution that smaller images use (the same weights at the same offsets, edges repeated)."""
    import torch.nn.functional as F

    from backend.core import corruptions as C

    x = _images(n=2, side=96)
    taps = C._streak_taps(2, 18, 3, -135, -45, np.random.default_rng(0))
    w, dx, dy = taps
    width, size = len(w), 2 * len(w) + 1
    kern = np.zeros((2, size, size), np.float32)
    for j in range(2):
        np.add.at(kern[j], (width - dy[j], width + dx[j]), w)
    xp = F.pad(x, (width,) * 4, mode="replicate").reshape(1, 6, 96 + 2 * width, 96 + 2 * width)
    dense = F.conv2d(xp, torch.from_numpy(kern).repeat_interleave(3, 0).unsqueeze(1), groups=6).reshape(2, 3, 96, 96)
    assert torch.allclose(C._streak(x, taps), dense, atol=1e-5)
