"""The Lesson's service calls (app.session.lesson): what each step asks for, and that computing them
ahead (lesson_view, started at launch after the home page's default view) leaves the page's identical
calls nothing to compute."""
from __future__ import annotations

import pytest

from app.session import lesson
from backend.explain import lens
from backend.service import Service
from backend.service.analyses import BatchAnalyses
from backend.transport.client import InProcessClient
from tests.helpers import tiny_checkpoint_root  # noqa: F401 (fixture)


def test_steps_are_six_with_unique_keys():
    assert len(lesson.STEPS) == 6 and len(set(lesson.STEP_KEYS)) == 6
    assert lesson.STEP_KEYS[0] == "fool" and lesson.STEP_KEYS[-1] == "draws"


def test_lesson_view_leaves_the_pages_calls_to_the_cache(tiny_checkpoint_root, tmp_path, monkeypatch):  # noqa: F811
    client = InProcessClient(Service(tiny_checkpoint_root, jobs_root=tmp_path / "jobs", device="cpu"))
    calls = {"lens": 0, "embed": 0}
    real_lens, real_embed = lens.targeted_lens, BatchAnalyses._embed_compute

    def counting_lens(*a, **k):
        calls["lens"] += 1
        return real_lens(*a, **k)

    def counting_embed(self, *a, **k):
        calls["embed"] += 1
        return real_embed(self, *a, **k)

    monkeypatch.setattr(lens, "targeted_lens", counting_lens)
    monkeypatch.setattr(BatchAnalyses, "_embed_compute", counting_embed)
    out = lesson.lesson_view(client, "samples:3")
    ids = lesson.models_of(client.list_models(), "cifar10")
    assert out["image_id"] == "samples:3" and calls == {"lens": len(ids), "embed": len(ids)}
    # the page's calls for the same image (app/views/lesson.py makes exactly these)
    img = client.get_image("samples:3")
    req = lesson.requests(client.limits(), client.list_models(), ids, "samples:3", img["label"], 10)
    assert req["target"] == (int(img["label"]) + 1) % 10 and req["lens"][1]["norm"] == "l2"
    args, kw = req["lens"]
    got = client.feature_lens(*args, **kw)
    for m, kw in req["embed"].items():
        assert client.embed(m, **kw)["coords_clean"].shape == (lesson.EMBED_N, 2)
    args, kw = req["attack"]
    assert set(client.attack(*args, **kw)["results"]) == set(ids)
    assert calls == {"lens": len(ids), "embed": len(ids)} and set(got) == set(ids)  # all from the caches
    client.close()


def test_lesson_view_without_models(tmp_path):
    client = InProcessClient(Service(tmp_path / "empty", jobs_root=tmp_path / "jobs", device="cpu"))
    assert lesson.lesson_view(client) == {}
    client.close()


@pytest.mark.parametrize("label,target", [(0, 1), (9, 0), (None, 1)])
def test_the_lens_step_targets_the_next_class(label, target):
    lim = {"attack": {"attacks": {"pgd": {"variants": [{"norm": "linf"}], "params": []}}}}
    req = lesson.requests(lim, [{"id": "a"}], ["a"], "samples:0", label, 10)
    assert req["target"] == target
