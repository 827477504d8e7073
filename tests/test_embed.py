"""Features, UMAP/PCA embedder, reference maps beside checkpoints, placement of new points."""
from __future__ import annotations

import json
import struct

import numpy as np
import pytest
import torch

from backend.explain.embed import (
    REFERENCE_FILE,
    Embedder,
    EmbedderCache,
    ReferenceEmbedding,
    compute_reference,
    extract_features,
    knn_place,
    load_reference,
    place,
    save_reference,
    standardise,
    warm_up,
)


@pytest.fixture(scope="module")
def clustered():
    """200 feature vectors (F=32) in 5 well separated clusters, and their cluster ids."""
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(5, 32)) * 2
    ids = rng.integers(0, 5, 200)
    return (np.abs(centers[ids] + 0.3 * rng.normal(size=(200, 32)))).astype(np.float32), ids


def test_extract_features_shape_batches_and_preds(tiny_model, tiny_batch):
    x, _ = tiny_batch
    f = extract_features(tiny_model, x, batch_size=3)
    assert f.shape == (4, 128) and f.dtype == np.float32
    with torch.no_grad():
        assert np.allclose(f, tiny_model.features(x).numpy(), atol=1e-5)
    f2, preds = extract_features(tiny_model, (x * 255).round().to(torch.uint8), with_preds=True)
    assert np.allclose(f2, extract_features(tiny_model, (x * 255).round() / 255), atol=1e-5)
    with torch.no_grad():
        assert np.array_equal(preds, tiny_model((x * 255).round() / 255).argmax(1).numpy())
    with pytest.raises(ValueError, match="batch_size"):
        extract_features(tiny_model, x, batch_size=0)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        extract_features(tiny_model, x + 1)


def test_standardise_rows():
    f = standardise(np.array([[3.0, 4.0], [0.0, 0.0]]))
    assert np.allclose(f, [[0.6, 0.8], [0.0, 0.0]])


def test_pca_exact(clustered):
    f, _ = clustered
    e = Embedder("pca", seed=0)
    c = e.fit(f)
    assert c.shape == (200, 2) and c.dtype == np.float32
    assert np.allclose(e.transform(f[:30]), c[:30], atol=1e-5)
    assert np.array_equal(Embedder("pca", seed=0).fit(f), c)
    # a direct computation: centred, L2-normalised rows onto the top-2 principal axes (up to sign)
    s = standardise(f).astype(np.float64)
    s -= s.mean(0)
    _, _, vt = np.linalg.svd(s, full_matrices=False)
    manual = s @ vt[:2].T
    assert np.allclose(np.abs(manual), np.abs(c), atol=1e-4)


def test_umap_seeded_transform_and_clusters(clustered):
    f, ids = clustered
    e = Embedder("umap", n_neighbors=15, min_dist=0.1, seed=0)
    c = e.fit(f)
    assert c.shape == (200, 2) and c.dtype == np.float32 and np.isfinite(c).all()
    assert np.array_equal(Embedder("umap", seed=0).fit(f), c)  # same seed -> same map
    # transforming a subset of the fitted points puts each near its own fitted position
    ct = e.transform(f[:40])
    assert ct.shape == (40, 2)
    extent = np.ptp(c, axis=0).max()
    dist = np.linalg.norm(ct - c[:40], axis=1) / extent
    assert np.quantile(dist, 0.9) < 0.05
    # and inside its own cluster: the nearest fitted point belongs to the same cluster
    nearest = np.argmin(((ct[:, None] - c[None]) ** 2).sum(-1), axis=1)
    assert (ids[nearest] == ids[:40]).mean() >= 0.95


def test_warm_up_compiles_and_reports_seconds():
    # after the test above the JIT is warm; warm_up must still run a real fit + transform
    dt = warm_up()
    assert isinstance(dt, float) and dt > 0


def test_embedder_validation(clustered):
    f, _ = clustered
    with pytest.raises(ValueError, match="'tsne'"):
        Embedder("tsne")
    with pytest.raises(ValueError, match="n_neighbors"):
        Embedder("umap", n_neighbors=1)
    with pytest.raises(RuntimeError, match="before fit"):
        Embedder("pca").transform(f)
    e = Embedder("pca")
    e.fit(f)
    with pytest.raises(ValueError, match="fitted on 32"):
        e.transform(f[:, :10])
    with pytest.raises(ValueError, match="at least 5"):
        Embedder("umap").fit(f[:3])


@pytest.mark.parametrize("method", ["pca", "umap"])
def test_reference_round_trip_and_place(tmp_path, tiny_model, method):
    g = torch.Generator().manual_seed(5)
    x = torch.rand(40, 3, 32, 32, generator=g)
    y = torch.randint(0, 10, (40,), generator=g)
    ids = [f"test:{i}" for i in range(40)]
    ref = compute_reference(tiny_model, x, y, method=method, seed=0, image_ids=ids, n_neighbors=10)
    assert ref.coords.shape == (40, 2) and ref.features.dtype == np.float16 and ref.features.shape == (40, 128)
    with torch.no_grad():
        assert np.array_equal(ref.preds, tiny_model(x).argmax(1).numpy())
    path = save_reference(tmp_path, ref)
    assert path.name == REFERENCE_FILE and sorted(p.name for p in tmp_path.iterdir()) == [REFERENCE_FILE]
    raw = path.read_bytes()
    header_len = struct.unpack("<Q", raw[:8])[0]  # safetensors: u64 header length, then JSON
    header = json.loads(raw[8:8 + header_len])
    assert set(header) == {"__metadata__", "coords", "labels", "preds", "features"}
    assert not raw.startswith(b"\x80")  # not a pickle
    back = load_reference(tmp_path)
    for k in ("coords", "labels", "preds", "features"):
        assert np.array_equal(getattr(back, k), getattr(ref, k)) and getattr(back, k).dtype == getattr(ref, k).dtype
    assert back.image_ids == ids and back.method == method and back.seed == 0 and back.params == ref.params

    # place: the refit reproduces the stored map, so the map's own transform is used
    new = extract_features(tiny_model, x[:5])
    out = place(back, new)
    assert out["method"] == "transform" and out["approximate"] is False and out["refit_deviation"] == 0.0
    assert out["coords"].shape == (5, 2)
    cache = EmbedderCache(maxsize=2)
    assert np.array_equal(place(back, new, cache=cache)["coords"], out["coords"])
    emb, dev = cache.get(back)
    assert dev == 0.0 and cache.get(back)[0] is emb  # fitted once, then reused


def test_place_falls_back_to_knn_when_refit_differs(tmp_path, clustered):
    f, ids = clustered
    emb = Embedder("pca")
    coords = emb.fit(f.astype(np.float16).astype(np.float32))
    ref = ReferenceEmbedding(coords + 1.0, ids.astype(np.int64), ids.astype(np.int64), f.astype(np.float16),
                             [f"test:{i}" for i in range(200)], "pca", 0, emb.params)
    out = place(ref, f[:3])  # stored coords were shifted, so a refit cannot reproduce them
    assert out["method"] == "knn" and out["approximate"] is True and out["refit_deviation"] > 0
    assert "approximate" in out["note"]


def test_knn_place_exact_points_and_weighting(clustered):
    f, ids = clustered
    coords = np.random.default_rng(1).random((200, 2)).astype(np.float32)
    ref = ReferenceEmbedding(coords, ids.astype(np.int64), ids.astype(np.int64), f.astype(np.float16),
                             [str(i) for i in range(200)], "umap", 0, {})
    out = knn_place(ref, ref.features[:10].astype(np.float32), k=5)
    assert out["approximate"] is True and out["coords"].shape == (10, 2)
    assert np.allclose(out["coords"], coords[:10], atol=1e-3)  # a point on a reference lands on it
    # by hand for one query: inverse-distance weights of its 5 nearest neighbours
    q = standardise(f[None, 0] + 0.05)
    r = standardise(ref.features.astype(np.float32))
    d = np.linalg.norm(r - q, axis=1)
    nn = np.argsort(d, kind="stable")[:5]
    w = 1 / (d[nn] + 1e-6)
    expected = (w[:, None] * coords[nn]).sum(0) / w.sum()
    assert np.allclose(knn_place(ref, f[None, 0] + 0.05, k=5)["coords"][0], expected, atol=1e-4)
    with pytest.raises(ValueError, match=r"\(M, 32\)"):
        knn_place(ref, f[:, :5])


def test_load_reference_missing_malformed_and_stale(tmp_path, tiny_model):
    assert load_reference(tmp_path) is None
    (tmp_path / REFERENCE_FILE).write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="malformed reference embedding"):
        load_reference(tmp_path)
    # a reference computed for other weights than the card's is ignored
    ref = compute_reference(tiny_model, torch.rand(8, 3, 32, 32), torch.zeros(8), method="pca",
                            weights_sha256="a" * 64)
    save_reference(tmp_path, ref)
    assert load_reference(tmp_path) is not None
    (tmp_path / "card.json").write_text(json.dumps({
        "id": "m", "display_name": "m", "method": "ce", "arch": "resnet18", "width": 16, "num_classes": 10,
        "classes": [str(i) for i in range(10)], "dataset": "cifar10", "data_variant": "x",
        "train_config": {}, "metrics": {}, "training": {}, "code_version": "0", "weights_sha256": "b" * 64}))
    assert load_reference(tmp_path) is None
