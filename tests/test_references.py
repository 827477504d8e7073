"""Reference embeddings: built from a checkpoint on a balanced seeded sample, stored without pixels,
and reused by the service's embedding explorer for any sample they cover."""
from __future__ import annotations

import numpy as np
import pytest

from backend.core.data import sample_images
from backend.eval.references import build_reference, main
from backend.explain.embed import REFERENCE_FILE, load_reference, save_reference
from backend.service import Service
from tests.helpers import fresh_checkpoint_root  # noqa: F401 (fixture)


def test_service_reuses_the_stored_map_for_a_covered_sample(fresh_checkpoint_root, tmp_path):  # noqa: F811
    ckpt = fresh_checkpoint_root / "tiny-ce"
    ref = build_reference(ckpt, n=20, method="pca", split=sample_images(), source="samples")
    assert ref.image_ids[0].startswith("samples:") and ref.features.dtype == np.float16
    assert ref.coords.shape == (20, 2)
    assert sorted(set(ref.labels.tolist())) == sorted(set(sample_images().labels.tolist()))
    save_reference(ckpt, ref)
    stored = load_reference(ckpt)
    assert stored is not None and stored.image_ids == ref.image_ids
    svc = Service(fresh_checkpoint_root, jobs_root=tmp_path / "jobs")
    try:
        out = svc.embed("tiny-ce", n=10, method="pca", source="samples")  # a subset of the stored 20
        assert out["from_reference"] is True
        pos = [ref.image_ids.index(i) for i in out["image_ids"]]
        np.testing.assert_array_equal(out["coords_clean"], ref.coords[pos])
        assert svc.embed("tiny-ce", n=10, method="pca", source="samples", seed=3)["from_reference"] is False
    finally:
        svc.close()


def test_cli_rejects_a_bad_n_and_writes_nothing(fresh_checkpoint_root, capsys):  # noqa: F811
    ckpt = fresh_checkpoint_root / "tiny-ce"
    with pytest.raises(SystemExit) as e:
        main(["--checkpoint", str(ckpt), "--n", "2"])
    assert e.value.code == 2 and "n must be" in capsys.readouterr().err
    assert not (ckpt / REFERENCE_FILE).exists()
    with pytest.raises(ValueError, match="exceeds"):
        build_reference(ckpt, n=21, method="pca", split=sample_images(), source="samples")


def test_warm_up_refits_the_stored_maps_so_placement_needs_no_fit(fresh_checkpoint_root, tmp_path):  # noqa: F811
    ckpt = fresh_checkpoint_root / "tiny-ce"
    save_reference(ckpt, build_reference(ckpt, n=20, method="umap", split=sample_images(), source="samples"))
    svc = Service(fresh_checkpoint_root, jobs_root=tmp_path / "jobs")
    try:
        assert svc.warm_up(background=False) is None
        assert len(svc.caches.embedders._items) == 1  # exactly the one model with a reference
        ref = load_reference(ckpt)
        emb, dev = svc.caches.embedders.get(ref)  # a cache hit: the same fitted object
        assert emb is svc.caches.embedders.get(ref)[0] and dev >= 0.0
        thread = svc.warm_up()  # background form: a daemon thread that finishes
        thread.join(120)
        assert not thread.is_alive() and thread.daemon
    finally:
        svc.close()


def test_warm_up_switch_reads_the_environment(monkeypatch):
    from backend.service import warm_up_enabled

    monkeypatch.setenv("ROBUSTLENS_WARM_UP", "0")
    assert not warm_up_enabled()
    monkeypatch.delenv("ROBUSTLENS_WARM_UP")
    assert warm_up_enabled()
    monkeypatch.setenv("ROBUSTLENS_WARM_UP", "1")
    assert warm_up_enabled()
