"""The service contract, run against both transports: InProcessClient and HttpClient over the FastAPI
app (httpx through fastapi's TestClient). Tiny random-init width-16 checkpoints in a temp folder;
images from the offline foolbox samples, so no data set is needed."""
from __future__ import annotations

import io
import time

import numpy as np
import pytest
from PIL import Image

from backend.core.errors import BusyError, NotFoundError
from backend.service import Service
from tests.helpers import CIFAR10_CLASSES, both_clients, tiny_checkpoint_root  # noqa: F401 (fixture)

IDS = ["tiny-rsupcon", "tiny-pgd", "tiny-ce"]  # the order list_models must give (rsupcon first)
PGD = {"method": "pgd", "eps": 8 / 255, "steps": 3}


@pytest.fixture(scope="module")
def clients(tiny_checkpoint_root, tmp_path_factory):  # noqa: F811
    """Two independent services over the same checkpoints: one in-process, one behind HTTP."""
    yield from both_clients(tiny_checkpoint_root, tmp_path_factory.mktemp("jobs"))


@pytest.fixture(params=["inprocess", "http"])
def client(request, clients):
    return clients[request.param]


def png_bytes(side: int = 40, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def assert_same(a, b, path="result"):
    """Equal structure, types and values (arrays: dtype, shape and bits; NaN equals NaN)."""
    assert type(a) is type(b), f"{path}: {type(a).__name__} != {type(b).__name__}"
    if isinstance(a, dict):
        assert a.keys() == b.keys(), f"{path}: keys {sorted(a)} != {sorted(b)}"
        for k in a:
            assert_same(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list):
        assert len(a) == len(b), f"{path}: length {len(a)} != {len(b)}"
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{path}[{i}]")
    elif isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and a.shape == b.shape, f"{path}: {a.dtype}{a.shape} != {b.dtype}{b.shape}"
        assert np.array_equal(a, b, equal_nan=a.dtype.kind == "f"), f"{path}: values differ"
    elif isinstance(a, float) and np.isnan(a):
        assert np.isnan(b), path
    else:
        assert a == b, f"{path}: {a!r} != {b!r}"


# ---- models and images -------------------------------------------------------------------------
def test_health_and_transport(client):
    assert client.health()["ok"] is True
    assert client.transport in ("inprocess", "http")


def test_list_models_order_and_cards(client):
    cards = client.list_models()
    assert [c["id"] for c in cards] == IDS
    card = client.model_card("tiny-pgd")
    assert card["method"] == "pgd_at" and card["width"] == 16 and card["classes"] == CIFAR10_CLASSES


def test_unknown_model_is_an_error_naming_the_known_ids(client):
    with pytest.raises(NotFoundError, match="unknown model 'nope'.*tiny-rsupcon"):
        client.model_card("nope")
    with pytest.raises(ValueError, match="unknown model 'nope'"):
        client.predict("samples:0", ["tiny-ce", "nope"])


def test_images(client):
    src = client.image_sources()
    assert src["samples"] == {"available": True, "count": 20, "message": src["samples"]["message"]}
    assert set(src) >= {"samples", "test", "train"}
    assert client.classes() == CIFAR10_CLASSES
    listing = client.list_images("samples", offset=0, limit=5)
    assert listing["total"] == 20 and len(listing["items"]) == 5
    assert listing["items"][0]["image_id"] == "samples:0"
    cats = client.list_images("samples", class_name="cat", limit=50)
    assert cats["total"] >= 1 and all(i["class_name"] == "cat" and i["label"] == 3 for i in cats["items"])
    img = client.get_image("samples:3")
    assert img["pixels"].dtype == np.uint8 and img["pixels"].shape == (32, 32, 3)
    assert img["class_name"] == CIFAR10_CLASSES[img["label"]]
    r1, r2 = client.random_image("samples", seed=7), client.random_image("samples", seed=7)
    assert r1["image_id"] == r2["image_id"]
    assert client.random_image("samples", class_name="ship", seed=1)["class_name"] == "ship"


def test_thumbnails_in_one_call(client):
    ids = ["samples:3", "samples:0", "samples:3"]
    px = client.thumbnails(ids)["pixels"]  # default side 32: CIFAR's own pixels, in the ids' order
    assert px.dtype == np.uint8 and px.shape == (3, 32, 32, 3)
    for j, i in enumerate(ids):
        assert np.array_equal(px[j], client.get_image(i)["pixels"])
    small = client.thumbnails(["samples:3"], side=16)["pixels"][0]  # 2 x 2 blocks averaged
    blocks = client.get_image("samples:3")["pixels"].astype(float).reshape(16, 2, 16, 2, 3).mean(axis=(1, 3))
    assert small.shape == (16, 16, 3) and np.abs(small - blocks).max() <= 1
    big = client.thumbnails(["samples:3"], side=64)["pixels"][0]  # pixels repeated
    assert np.array_equal(big[::2, ::2], client.get_image("samples:3")["pixels"])
    net = client.thumbnails(["imagenet/samples:1", "samples:1"], side=56)["pixels"]  # 224 px -> 56, 4 x 4 blocks
    full = client.get_image("imagenet/samples:1")["pixels"].astype(float)
    assert net.shape == (2, 56, 56, 3)
    assert np.abs(net[0] - full.reshape(56, 4, 56, 4, 3).mean(axis=(1, 3))).max() <= 1
    assert client.thumbnails([])["pixels"].shape == (0, 32, 32, 3)


def test_thumbnails_bad_requests(client):
    with pytest.raises(NotFoundError, match="samples has 20 images"):
        client.thumbnails(["samples:1", "samples:99"])
    with pytest.raises(NotFoundError, match="unknown upload"):
        client.thumbnails(["upload:0123456789abcdef"])
    with pytest.raises(ValueError, match="invalid image id"):
        client.thumbnails(["cat.png"])
    for side in (4, 97):
        with pytest.raises(ValueError, match="side must be an integer in 8..96"):
            client.thumbnails(["samples:1"], side=side)
    with pytest.raises(ValueError, match="at most 2000 thumbnails per call, got 2001"):
        client.thumbnails(["samples:1"] * 2001)


@pytest.mark.parametrize("bad, match", [("samples:99", "samples has 20 images"), ("cat.png", "invalid image id"),
                                        ("upload:0123456789abcdef", "unknown upload")])
def test_bad_image_ids(client, bad, match):
    with pytest.raises(ValueError, match=match):
        client.get_image(bad)


def test_bad_listing_params(client):
    with pytest.raises(ValueError, match="limit must be an integer in 1..500"):
        client.list_images("samples", limit=0)
    with pytest.raises(ValueError, match="unknown class 'dragon'"):
        client.list_images("samples", class_name="dragon")
    with pytest.raises(ValueError, match="unknown image source 'val'"):
        client.list_images("val")


def test_upload_good_and_bad(client):
    img = client.upload_image(png_bytes(48))
    assert img["image_id"].startswith("upload:") and len(img["image_id"]) == len("upload:") + 16
    assert img["label"] is None and img["pixels"].shape == (32, 32, 3) and img["pixels"].dtype == np.uint8
    assert client.get_image(img["image_id"])["image_id"] == img["image_id"]
    res = client.predict(img["image_id"], ["tiny-ce"])["results"]["tiny-ce"]
    assert res["probs"].shape == (10,)
    with pytest.raises(ValueError, match="not an image"):
        client.upload_image(b"definitely not an image")
    with pytest.raises(ValueError, match="corrupt|truncated"):
        client.upload_image(png_bytes(48)[:200])


# ---- analysis ----------------------------------------------------------------------------------
def test_predict_probabilities(client):
    out = client.predict("samples:0", topk=3)
    assert out["image_id"] == "samples:0" and list(out["results"]) == IDS
    for r in out["results"].values():
        assert r["probs"].dtype == np.float32 and r["probs"].shape == (10,)
        assert abs(float(r["probs"].sum()) - 1) < 1e-5
        assert r["pred"] == int(np.argmax(r["probs"]))
        assert [t["index"] for t in r["top"]][0] == r["pred"] and len(r["top"]) == 3
        assert [t["prob"] for t in r["top"]] == sorted((t["prob"] for t in r["top"]), reverse=True)
        assert r["top"][0]["class_name"] == CIFAR10_CLASSES[r["pred"]]


@pytest.mark.parametrize("topk", [0, 11, 2.5])
def test_predict_bad_topk(client, topk):
    with pytest.raises(ValueError, match="topk"):
        client.predict("samples:0", ["tiny-ce"], topk=topk)


def test_attack_whitebox_invariants(client):
    out = client.attack("samples:1", PGD, saliency="gradient")
    assert out["mode"] == "whitebox" and out["source_model"] is None
    assert out["spec"]["step_size"] == pytest.approx(2.5 * (8 / 255) / 3) and out["spec"]["random_start"] is True
    clean = client.get_image("samples:1")["pixels"].astype(np.float32) / 255
    for mid, r in out["results"].items():
        adv = r["adv_pixels"]
        assert r["crafted_on"] == mid
        assert adv.dtype == np.float32 and adv.shape == (32, 32, 3)
        assert adv.min() >= 0 and adv.max() <= 1
        assert np.abs(adv - clean).max() <= 8 / 255 + 1e-6
        assert r["linf"] <= 8 / 255 + 1e-6 and r["l2"] >= 0 and r["iterations"] >= 1
        np.testing.assert_allclose(r["delta"], adv - clean, atol=1e-6)
        assert r["flipped"] == (r["clean"]["pred"] != r["adv"]["pred"])
        for key in ("saliency_clean", "saliency_adv"):
            assert r[key].shape == (32, 32) and r[key].dtype == np.float32
            assert 0 <= r[key].min() and r[key].max() <= 1


def test_attack_transfer(client):
    out = client.attack("samples:2", PGD, mode="transfer", source_model="tiny-ce")
    assert out["mode"] == "transfer" and out["source_model"] == "tiny-ce"
    advs = [r["adv_pixels"] for r in out["results"].values()]
    assert all(r["crafted_on"] == "tiny-ce" for r in out["results"].values())
    assert all(np.array_equal(advs[0], a) for a in advs[1:])  # one image, evaluated on every model
    white = client.attack("samples:2", PGD, model_ids=["tiny-ce"])["results"]["tiny-ce"]
    assert np.array_equal(white["adv_pixels"], out["results"]["tiny-ce"]["adv_pixels"])
    with pytest.raises(ValueError, match="source_model"):
        client.attack("samples:2", PGD, mode="transfer")


@pytest.mark.parametrize("spec, match", [
    ({"method": "pgd", "eps": 0.9}, "eps must be in"),
    ({"method": "teleport"}, "unknown attack method 'teleport'"),
    ({"method": "pgd", "colour": 1}, "unknown attack spec keys"),
    ({"method": "pgd", "steps": -1}, "steps must be in"),
])
def test_attack_bad_spec(client, spec, match):
    with pytest.raises(ValueError, match=match):
        client.attack("samples:0", spec, ["tiny-ce"])


def test_attack_bad_mode_and_saliency(client):
    with pytest.raises(ValueError, match="mode"):
        client.attack("samples:0", PGD, ["tiny-ce"], mode="sideways")
    with pytest.raises(ValueError, match="unknown saliency method 'xray'"):
        client.attack("samples:0", PGD, ["tiny-ce"], saliency="xray")


@pytest.mark.parametrize("method", ["gradient", "smoothgrad", "gradcam", "integrated_gradients"])
def test_an_adversarial_map_computes_its_clean_twin_in_the_same_pass(tiny_checkpoint_root, method,  # noqa: F811
                                                                    monkeypatch):
    """Issue 12 (speed at 224 px): explaining the adversarial image first computes the clean map in
    the same attribution pass of two images and caches it; both equal what two separate calls give."""

    params = {"ig_steps": 8} if method == "integrated_gradients" else {"smoothgrad_samples": 4} \
        if method == "smoothgrad" else None
    alone = Service(tiny_checkpoint_root, device="cpu")
    paired = Service(tiny_checkpoint_root, device="cpu")
    try:
        clean_ref = alone.explain("samples:5", "tiny-pgd", method, params=params)
        adv_ref = alone.explain("samples:5", "tiny-pgd", method, spec=PGD, params=params)
        engine = paired.image_analyses.engine
        passes, heatmaps = [], engine.heatmaps
        monkeypatch.setattr(engine, "heatmaps", lambda mid, x, t, *a: passes.append(len(x)) or heatmaps(mid, x, t, *a))
        adv = paired.explain("samples:5", "tiny-pgd", method, spec=PGD, params=params)
        clean = paired.explain("samples:5", "tiny-pgd", method, params=params)
        assert passes == [2], passes  # one pass of two images; the clean call was a cache hit
        for got, ref in ((clean, clean_ref), (adv, adv_ref)):
            assert got["adversarial"] is ref["adversarial"] and got["target"] == ref["target"]
            np.testing.assert_allclose(got["attribution"], ref["attribution"], rtol=1e-4, atol=1e-6)
            np.testing.assert_allclose(got["heatmap"], ref["heatmap"], atol=1e-4)
        paired.saliency_metrics("samples:6", "tiny-pgd", method, spec=PGD)  # the studio's first call
        assert passes == [2, 2], passes
    finally:
        alone.close()
        paired.close()


def test_explain_shapes(client):
    pred = client.predict("samples:4", ["tiny-pgd"])["results"]["tiny-pgd"]["pred"]
    e = client.explain("samples:4", "tiny-pgd", "integrated_gradients", params={"ig_steps": 8})
    assert e["method"] == "integrated_gradients" and e["target"] == pred and e["adversarial"] is False
    assert e["heatmap"].shape == (32, 32) and e["heatmap"].dtype == np.float32
    assert 0 <= e["heatmap"].min() and e["heatmap"].max() <= 1
    assert e["attribution"].shape == (3, 32, 32) and e["attribution"].dtype == np.float32
    assert client.explain("samples:4", "tiny-pgd", "gradcam", target=7)["target"] == 7
    adv = client.explain("samples:4", "tiny-pgd", "gradient", spec=PGD)
    assert adv["adversarial"] is True and adv["heatmap"].shape == (32, 32)
    with pytest.raises(ValueError, match="unknown saliency params"):
        client.explain("samples:4", "tiny-pgd", "gradient", params={"ig_stepz": 8})
    with pytest.raises(ValueError, match="target"):
        client.explain("samples:4", "tiny-pgd", "gradient", target=10)


def test_saliency_maps_on_a_requested_scale(client):
    """What the pages draw: per map, explain's own heatmaps; shared, one top for every map (the
    strongest map reaches 1, the others stay proportionally darker, "peak" says how bright each can get)."""
    ids = ["tiny-ce", "tiny-pgd"]
    per = client.saliency_maps("samples:6", ids, "gradient", spec=PGD)
    assert per["scale"] == "map" and per["top"] is None
    for m in ids:
        assert np.array_equal(per["results"][m]["clean"], client.explain("samples:6", m, "gradient")["heatmap"])
        assert np.array_equal(per["results"][m]["adv"], client.explain("samples:6", m, "gradient", spec=PGD)["heatmap"])
        assert per["results"][m]["peak"] == 1.0
    shared = client.saliency_maps("samples:6", ids, "gradient", spec=PGD, scale="shared")
    r = shared["results"]
    assert shared["top"] > 0 and max(x["peak"] for x in r.values()) == 1.0
    for m in ids:
        attrs = [client.explain("samples:6", m, "gradient", spec=s)["attribution"] for s in (None, PGD)]
        raw = [np.abs(a).sum(axis=0) for a in attrs]  # the gradient's display rule: |attr| over channels
        for x, kind in zip(raw, ("clean", "adv")):
            assert np.allclose(r[m][kind], np.clip(x / shared["top"], 0, 1), atol=1e-6)
        assert np.isclose(r[m]["peak"], max(np.percentile(x, 99) for x in raw) / shared["top"], rtol=1e-5)
        assert r[m]["target_clean"] == client.explain("samples:6", m, "gradient")["target"]
    assert client.saliency_maps("samples:6", ["tiny-ce"], "gradcam")["results"]["tiny-ce"]["adv"] is None
    with pytest.raises(ValueError, match="scale"):
        client.saliency_maps("samples:6", ids, "gradient", scale="global")


def test_saliency_metrics_and_sanity_check(client):
    m = client.saliency_metrics("samples:5", "tiny-ce", "gradient", spec={"method": "fgsm"})
    assert 0 <= m["alignment"] <= 1 and 0 <= m["deletion_auc"] <= 1 and 0 <= m["insertion_auc"] <= 1
    assert m["deletion_curve"].shape == m["insertion_curve"].shape == (33,)
    assert set(m["drift"]) == {"spearman", "topk_overlap"}
    s = client.sanity_check("samples:5", "tiny-ce", "gradient")
    assert len(s["stages"]) == len(s["similarity"]) >= 1
    assert s["heatmap_random"].shape == (32, 32)


def test_embed_pca_with_adversarial_points(client):
    out = client.embed("tiny-ce", n=20, spec={"method": "fgsm"}, method="pca", source="samples")
    assert out["method"] == "pca" and out["coords_clean"].shape == (20, 2) and out["coords_adv"].shape == (20, 2)
    assert out["labels"].shape == out["pred_clean"].shape == out["pred_adv"].shape == (20,)
    assert len(out["image_ids"]) == 20 and out["from_reference"] is False and out["placement"] == "transform"


def test_embed_umap_small(client):
    out = client.embed("tiny-rsupcon", n=12, method="umap", source="samples")
    assert out["coords_clean"].shape == (12, 2) and out["coords_adv"] is None and out["pred_adv"] is None
    assert np.isfinite(out["coords_clean"]).all()
    with pytest.raises(ValueError, match="n must be an integer in 5..2000"):
        client.embed("tiny-ce", n=4000, method="umap", source="samples")


def test_robustness_curve(client):
    eps = [0.0, 2 / 255, 8 / 255, 32 / 255]
    out = client.robustness_curve(["tiny-ce", "tiny-pgd"], "pgd", eps, n=10, steps=2, source="samples")
    assert list(out) == ["tiny-ce", "tiny-pgd"]
    for r in out.values():
        acc = r["accuracy"]
        assert r["eps"] == eps and len(acc) == 4 and r["n"] == 10
        assert all(acc[0] >= a for a in acc[1:])                           # clean >= robust
        assert all(b <= a + 0.1 + 1e-9 for a, b in zip(acc, acc[1:]))     # monotone up to one image
        assert r["flip_matrix"].shape == (10, 10) and r["flip_matrix"].dtype == np.int64
        assert r["flip_matrix"].sum() == 10
        assert r["per_class_clean"].shape == r["per_class_robust"].shape == (10,)
        assert (r["per_class_robust"] <= r["per_class_clean"] + 1e-6).all()
    with pytest.raises(ValueError, match="n must be an integer in 1..1000"):
        client.robustness_curve(n=5000, source="samples")


def test_corruption_view(client):
    out = client.corruption_view("samples:2", ["tiny-ce", "tiny-pgd"], corruptions=["fog", "gaussian_noise"],
                                 severities=[5, 1], saliency="gradcam", seed=4)
    assert out["corruptions"] == ["fog", "gaussian_noise"] and out["severities"] == [1, 5] and out["seed"] == 4
    px = out["pixels"]
    assert px.shape == (2, 2, 32, 32, 3) and px.dtype == np.float32 and 0 <= px.min() <= px.max() <= 1
    clean = client.get_image("samples:2")["pixels"].astype(np.float32) / 255
    change = np.abs(px - clean).mean(axis=(2, 3, 4))  # (K,V)
    assert (change[:, 0] < change[:, 1]).all()  # severity 1 changes the image less than 5
    assert list(out["results"]) == ["tiny-ce", "tiny-pgd"]
    for r in out["results"].values():
        assert r["pred"].shape == (2, 2) and r["pred"].dtype == np.int64 and ((0 <= r["pred"]) & (r["pred"] < 10)).all()
        assert r["prob"].shape == (2, 2) and (r["prob"] > 0).all() and (r["prob"] <= 1).all()
        assert r["flipped"].dtype == bool and (r["flipped"] == (r["pred"] != r["clean"]["pred"])).all()
        assert r["correct"].shape == (2, 2)  # the samples have labels
        assert r["saliency"].shape == (2, 2, 32, 32) and 0 <= r["saliency"].min() <= r["saliency"].max() <= 1
    again = client.corruption_view("samples:2", ["tiny-ce"], corruptions=["fog", "gaussian_noise"], severities=[1, 5],
                                   seed=4)
    assert np.array_equal(again["pixels"], px) and again["results"]["tiny-ce"]["saliency"] is None  # seeded
    assert np.array_equal(again["results"]["tiny-ce"]["pred"], out["results"]["tiny-ce"]["pred"])
    full = client.corruption_view("samples:2", ["tiny-ce"])
    assert full["pixels"].shape == (15, 5, 32, 32, 3) and full["severities"] == [1, 2, 3, 4, 5]
    with pytest.raises(ValueError, match="unknown corruption 'rain'"):
        client.corruption_view("samples:2", corruptions=["rain"])
    with pytest.raises(ValueError, match="severities must be distinct ints in 1..5"):
        client.corruption_view("samples:2", severities=[6])
    with pytest.raises(ValueError, match="unknown saliency method"):
        client.corruption_view("samples:2", saliency="xray")
    with pytest.raises(NotFoundError):
        client.corruption_view("samples:999")


def test_corruption_curve_and_its_task(client):
    out = client.corruption_curve(["tiny-ce", "tiny-pgd"], ["contrast", "fog"], n=10, source="samples", seed=1)
    assert list(out) == ["tiny-ce", "tiny-pgd"]
    for r in out.values():
        assert r["severities"] == [0, 1, 2, 3, 4, 5] and r["n"] == 10 and r["corruptions"] == ["contrast", "fog"]
        for acc in r["accuracy"].values():
            assert len(acc) == 6 and acc[0] == r["clean"] and all(0 <= a <= 1 for a in acc)
        assert r["mca"] == pytest.approx(np.mean([a for v in r["accuracy"].values() for a in v[1:]]))
        assert r["variant"].startswith("regenerated")
    params = {"model_ids": ["tiny-ce"], "corruptions": ["contrast"], "n": 10, "source": "samples", "seed": 2}
    st = wait_task(client, client.start_task("corruption_curve", params))
    assert st["state"] == "done" and st["done"] == st["total"] == 6
    assert_same(st["result"], client.corruption_curve(**params))
    with pytest.raises(ValueError, match="n must be an integer in 1..1000"):
        client.corruption_curve(n=5000, source="samples")
    with pytest.raises(ValueError, match="unknown corruption 'rain'"):
        client.start_task("corruption_curve", {"corruptions": ["rain"], "source": "samples"})


def test_a_cancelled_corruption_curve_raises_the_one_cancellation_signal(clients):
    from backend.core.errors import Cancelled

    service = clients["inprocess"].service
    with pytest.raises(Cancelled):
        service.corruption_curve(["tiny-ce"], ["fog"], n=5, source="samples", seed=7, should_stop=lambda: True)


def test_feature_lens_and_class_visualisation(client):
    out = client.feature_lens("samples:0", 5, ["tiny-ce"], eps=16 / 255, steps=5)
    r = out["tiny-ce"]
    clean = client.get_image("samples:0")["pixels"].astype(np.float32) / 255
    assert r["pixels"].shape == (32, 32, 3) and np.abs(r["pixels"] - clean).max() <= 16 / 255 + 1e-6
    assert 0 <= r["target_prob"] <= 1 and 0 <= r["pred"] < 10
    vis = client.class_visualisation(2, ["tiny-ce", "tiny-pgd"], steps=5)
    assert list(vis) == ["tiny-ce", "tiny-pgd"]
    assert vis["tiny-ce"]["pixels"].shape == (32, 32, 3) and 0 <= vis["tiny-ce"]["target_prob"] <= 1
    with pytest.raises(ValueError, match="eps must be in"):
        client.feature_lens("samples:0", 5, ["tiny-ce"], eps=0.5)
    with pytest.raises(ValueError, match="target_class"):
        client.class_visualisation(10, ["tiny-ce"])


# ---- tasks -------------------------------------------------------------------------------------
def wait_task(client, task_id, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        st = client.task_status(task_id)
        if st["state"] != "running":
            return st
        time.sleep(0.05)
    raise AssertionError(f"task {task_id} still running after {timeout} s")


def test_task_progress_and_result(client):
    params = {"model_ids": ["tiny-ce"], "eps_list": [0.0, 4 / 255], "n": 10, "steps": 2, "source": "samples",
              "seed": 3}
    st = wait_task(client, client.start_task("robustness_curve", params))
    assert st["state"] == "done" and st["error"] is None and st["kind"] == "robustness_curve"
    assert st["done"] == st["total"] >= 2
    assert_same(st["result"], client.robustness_curve(**params))


def test_task_cancel_and_limit(client):
    slow = {"target_class": 1, "model_ids": IDS, "steps": 500, "seed": 9}
    a = client.start_task("class_visualisation", slow)
    b = client.start_task("class_visualisation", {**slow, "seed": 10})
    with pytest.raises(BusyError, match="too many background tasks") as busy:  # typed: HTTP 429, not a 400
        client.start_task("class_visualisation", {**slow, "seed": 11})
    assert not isinstance(busy.value, ValueError) and busy.value.retry_after > 0
    for t in (a, b):
        client.cancel_task(t)
    assert {wait_task(client, t, timeout=30)["state"] for t in (a, b)} == {"cancelled"}
    assert client.task_status(a)["result"] is None


def test_task_bad_requests(client):
    with pytest.raises(ValueError, match="unknown task kind 'sleep'"):
        client.start_task("sleep", {})
    with pytest.raises(ValueError, match="unknown robustness_curve params"):
        client.start_task("robustness_curve", {"nn": 3})
    with pytest.raises(ValueError, match="n must be"):
        client.start_task("embed", {"model_id": "tiny-ce", "n": 999999})
    with pytest.raises(NotFoundError, match="unknown task id"):
        client.task_status("0123456789ab")


# ---- jobs and limits (the job lifecycle itself is in test_jobs.py) --------------------------------
def test_job_validation_and_unknown_ids(client):
    with pytest.raises(ValueError, match="unknown training method 'magic'"):
        client.start_job({"method": "magic"})
    with pytest.raises(ValueError, match="epochs must be in 1..50"):
        client.start_job({"method": "ce", "epochs": 100})
    with pytest.raises(NotFoundError, match="unknown job id"):
        client.job_status("0123456789ab")
    assert client.list_jobs() == []


def test_limits(client):
    lim = client.limits()
    assert lim["embed"]["max_n"] == 2000 and lim["curve"]["max_n"] == 1000
    assert lim["topk"] == [1, 10] and lim["upload"]["max_bytes"] > 0
    assert lim["jobs"]["widths"] == [16, 32, 64] and lim["attack"]["max_eps_linf"] > 0
    assert lim == {**client.capabilities(), "topk": [1, 10]}  # limits: the capabilities and the models' bounds


def test_capabilities_are_computed_once(tiny_checkpoint_root, tmp_path, monkeypatch):  # noqa: F811
    """The file system (the trainer's data) is read at the first call, not on every page run; and a
    caller editing its copy changes nobody else's."""
    from backend.service import jobs

    calls = []
    real = jobs.trainable_datasets
    monkeypatch.setattr(jobs, "trainable_datasets", lambda data: calls.append(data) or real(data))
    svc = Service(tiny_checkpoint_root, jobs_root=tmp_path / "jobs")
    try:
        first = svc.capabilities()
        first["device"] = "edited"
        for _ in range(3):
            assert svc.limits()["device"] == "cpu" and svc.capabilities()["device"] == "cpu"
        assert len(calls) == 1
    finally:
        svc.close()


# ---- both transports agree ---------------------------------------------------------------------
def test_transports_give_identical_results(clients):
    calls = [
        ("predict", ("samples:6",), {"topk": 4}),
        ("attack", ("samples:6", PGD), {"saliency": "gradcam"}),
        ("attack", ("samples:6", {"method": "fgsm"}), {"mode": "transfer", "source_model": "tiny-pgd"}),
        ("explain", ("samples:6", "tiny-rsupcon"), {"method": "smoothgrad", "params": {"smoothgrad_samples": 4}}),
        ("saliency_metrics", ("samples:6", "tiny-rsupcon"), {"method": "gradient", "spec": PGD}),
        ("embed", ("tiny-pgd",), {"n": 10, "method": "pca", "source": "samples", "spec": {"method": "fgsm"}}),
        ("feature_lens", ("samples:6", 1), {"model_ids": ["tiny-ce"], "steps": 3}),
        ("corruption_view", ("samples:6",), {"corruptions": ["snow", "pixelate"], "saliency": "gradient"}),
        ("corruption_curve", (["tiny-pgd"],), {"corruptions": ["zoom_blur"], "n": 8, "source": "samples"}),
        ("list_images", ("samples",), {"class_name": "ship"}),
        ("get_image", ("samples:6",), {}),
        ("thumbnails", (["samples:6", "imagenet/samples:2", "samples:6"],), {"side": 48}),
    ]
    for name, args, kw in calls:
        a = getattr(clients["inprocess"], name)(*args, **kw)
        b = getattr(clients["http"], name)(*args, **kw)
        assert_same(a, b, name)


def test_cached_results_cannot_be_corrupted(clients):
    c = clients["inprocess"]
    first = c.predict("samples:7", ["tiny-ce"])
    probs = first["results"]["tiny-ce"]["probs"]
    with pytest.raises(ValueError, match="read-only"):
        probs[0] = 5.0
    first["results"]["tiny-ce"]["pred"] = -1
    again = c.predict("samples:7", ["tiny-ce"])["results"]["tiny-ce"]
    assert again["pred"] == int(np.argmax(again["probs"])) and abs(float(again["probs"].sum()) - 1) < 1e-5
