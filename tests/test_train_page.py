"""The Train page's data-set choice (AppTest against the real in-process backend): shown only when the
backend holds the training images of more than one registered data set, and the job it starts trains
on the chosen one (the job's config file, which the trainer reads, says so)."""
from __future__ import annotations

import contextlib
import json
from pathlib import Path

from streamlit.testing.v1 import AppTest

from backend.core.datasets import get_dataset
from tests.helpers import write_tiny_models

MAIN = str(Path(__file__).resolve().parent.parent / "app" / "main.py")


def _env(monkeypatch, tmp_path, job_data: str, data_root: Path) -> None:
    root = tmp_path / "ckpt"
    write_tiny_models(root, models=(("tiny-ce", "ce", 3),))
    monkeypatch.setenv("ROBUSTLENS_CHECKPOINTS", str(root))  # a fresh in-process service for this test
    monkeypatch.setenv("RSUPCON_DATA", str(data_root))
    monkeypatch.setenv("ROBUSTLENS_JOB_DATA", job_data)
    monkeypatch.delenv("BACKEND_URL", raising=False)
    monkeypatch.delenv("ROBUSTLENS_TOKEN", raising=False)


def _train_page() -> AppTest:
    at = AppTest.from_file(MAIN, default_timeout=180)
    at.switch_page("views/train.py")
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    return at


def test_one_data_set_keeps_the_form_unchanged(monkeypatch, tmp_path):
    _env(monkeypatch, tmp_path, "synthetic", tmp_path / "no-data")
    at = _train_page()
    assert "job_dataset" not in [s.key for s in at.selectbox]
    assert {"job_method", "job_preset"} <= {s.key for s in at.selectbox}


def test_two_data_sets_offer_a_choice_and_the_job_trains_on_it(monkeypatch, tmp_path):
    data = tmp_path / "data"  # CIFAR-10 as an ImageFolder tree, CIFAR-100 as a torchvision root
    for c in get_dataset("cifar10").classes:
        (data / "train" / c).mkdir(parents=True)
    (data / "cifar-100-python").mkdir()
    _env(monkeypatch, tmp_path, str(data), data)
    at = _train_page()
    choice = at.selectbox(key="job_dataset")
    assert list(choice.options) == ["cifar10", "cifar100"] and choice.value == "cifar10"
    choice.set_value("cifar100")
    at.selectbox(key="job_method").set_value("ce")
    at.selectbox(key="job_preset").set_value("smoke")
    at.form_submit_button[0].click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    job_id = at.session_state["job_selected"]

    from backend.transport.client import make_client

    client = make_client()
    job = client.job_status(job_id)
    assert job["config"]["dataset"] == "cifar100" and job["config"]["data"] == str(data)
    written = json.loads((tmp_path / "ckpt" / ".jobs" / job_id / "config.json").read_text())
    assert written == job["config"]
    with contextlib.suppress(ValueError):  # the trainer finds no CIFAR-100 images and fails on its own
        client.cancel_job(job_id)


def test_the_form_offers_the_trainable_architectures_and_the_job_trains_the_chosen_one(monkeypatch, tmp_path):
    _env(monkeypatch, tmp_path, "synthetic", tmp_path / "no-data")
    at = _train_page()
    arch = at.selectbox(key="job_arch")
    assert list(arch.options) == ["ResNet-18 (CIFAR stem)", "FastNet (compact VGG-style, for CPU training)"]
    arch.set_value("fastnet")
    at.selectbox(key="job_method").set_value("ce")
    at.selectbox(key="job_preset").set_value("smoke")
    at.form_submit_button[0].click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    from backend.transport.client import make_client

    client = make_client()
    job = client.job_status(at.session_state["job_selected"])
    assert job["config"]["arch"] == "fastnet"
    with contextlib.suppress(ValueError):
        client.cancel_job(job["job_id"])
