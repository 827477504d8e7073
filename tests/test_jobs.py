"""Training jobs end to end: real `python -m backend.train` processes with the smoke preset on the
synthetic task (seconds each), records in SQLite, events in JSON lines."""
from __future__ import annotations

import json
import os
import signal
import sqlite3
import time

import pytest

from backend.core.checkpoints import read_card
from backend.core.errors import NotFoundError
from backend.service import Service
from backend.service import jobs as jobs_mod
from backend.service.jobs import JobConfig, JobManager
from backend.train.config import make_config

SMOKE = {"method": "ce", "preset": "smoke"}
LONG = {"method": "ce", "preset": "smoke", "epochs": 20, "subset": 64}  # long enough to cancel mid-run


def wait_for(fn, timeout=180.0, what="condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = fn()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def wait_state(mgr, job_id, states, timeout=180.0):
    return wait_for(lambda: (lambda s: s if s["state"] in states else None)(mgr.job_status(job_id)),
                    timeout, f"job {job_id} to reach {states}")


def wait_progress(mgr, job_id):
    """Until the trainer has emitted a progress event (it is then mid-epoch)."""
    return wait_for(lambda: any(e["type"] == "progress" for e in mgr.job_events(job_id, 0)), 180,
                    f"a progress event from job {job_id}")


@pytest.fixture
def root(tmp_path):
    return tmp_path / "checkpoints"


@pytest.mark.parametrize("config, match", [
    ({"method": "magic"}, "unknown training method 'magic'"),
    ({"preset": "smoke"}, "needs 'method'"),
    ({"method": "ce", "width": 48}, "width must be one of 16, 32, 64, got 48"),
    ({"method": "ce", "epochs": 0}, "epochs must be a positive integer, got 0"),
    ({"method": "ce", "epochs": 51}, r"epochs must be in 1\.\.50, got 51"),
    ({"method": "ce", "subset": 10}, r"subset must be in 64\.\.50000, got 10"),
    ({"method": "ce", "attack_steps": 21}, r"attack_steps must be in 1\.\.20, got 21"),
    ({"method": "ce", "batch_size": 2.5}, r"batch_size must be an integer, got 2\.5"),
    ({"method": "ce", "preset": "huge"}, "unknown preset 'huge'"),
    ({"method": "ce", "dataset": "mnist"}, "unknown data set 'mnist'"),
    ({"method": "ce", "arch": "torchvision"}, "arch must be one of resnet18, fastnet, got 'torchvision'"),
    ({"method": "ce", "lr": 0.1}, "unknown job config keys \\['lr'\\]"),
    ({"method": "ce", "data": "/etc"}, "unknown job config keys \\['data'\\]"),  # the manager's, not the caller's
    ({"method": "ce", "name": ""}, "job name must be"),
    # issue 13: non-finite numbers were an OverflowError / ValueError from int() (HTTP 500)
    ({"method": "ce", "epochs": float("inf")}, "epochs must be an integer, got inf"),
    ({"method": "ce", "seed": float("-inf")}, "seed must be an integer, got -inf"),
    ({"method": "ce", "subset": float("nan")}, "subset must be an integer, got nan"),
])
def test_config_validation(config, match):
    with pytest.raises(ValueError, match=match):
        JobConfig.from_dict(config)


def test_a_bad_value_at_submit_creates_nothing(root):
    mgr = JobManager(root, data="synthetic")
    with pytest.raises(ValueError, match=r"epochs must be in 1\.\.50, got 51"):
        mgr.start_job({"method": "ce", "epochs": 51})
    assert mgr.list_jobs() == [] and not [p for p in mgr.jobs_dir.iterdir() if p.is_dir()]
    mgr.close()


def test_the_job_config_file_is_the_validated_train_config(root):
    """The job writes the trainer one JSON config (TrainConfig fields, the preset filled in) and runs
    `python -m backend.train --config FILE`; the record's config is the same dict."""
    mgr = JobManager(root, data="synthetic")
    job = mgr.start_job({**LONG, "dataset": "cifar100", "seed": 3.0})
    path = mgr.config_path(job["job_id"])
    expected = make_config("smoke", method="ce", epochs=20, subset=64, dataset="cifar100", seed=3,
                           data="synthetic").to_dict()
    assert json.loads(path.read_text()) == job["config"] == expected
    assert f"-m backend.train --config {path} " in mgr.job_log(job["job_id"], 100)
    mgr.cancel_job(job["job_id"])
    # a record from before config files (job fields and a name) gets its file when it is (re)started
    legacy = {"method": "pgd_at", "preset": "smoke", "width": None, "subset": None, "epochs": 2,
              "attack_steps": None, "batch_size": None, "name": None, "seed": 0}
    path.unlink()
    assert json.loads(mgr._config_file(job["job_id"], legacy).read_text()) \
        == make_config("smoke", method="pgd_at", epochs=2, data="synthetic").to_dict()
    mgr.close()


@pytest.mark.slow
def test_lifecycle_done_and_model_in_registry(root):
    svc = Service(root, job_data="synthetic")
    assert svc.list_models() == []
    job = svc.start_job({**SMOKE, "name": "first job"})
    assert job["state"] in ("queued", "running") and job["name"] == "first job" and job["method"] == "ce"
    assert job["config"]["preset"] == "smoke" and job["checkpoint"] is None
    written = json.loads(svc.jobs.config_path(job["job_id"]).read_text())
    assert written == job["config"]
    done = wait_state(svc.jobs, job["job_id"], ("done", "failed", "cancelled", "interrupted"))
    assert done["state"] == "done", done["error"]
    model_id = f"job-{job['job_id']}-ce"
    assert done["checkpoint"] == model_id and done["finished"] >= done["started"] >= done["created"]
    assert read_card(root / model_id)["train_config"] == written  # one schema from the form to the card
    events = svc.job_events(job["job_id"])
    types = [e["type"] for e in events]
    assert types[0] == "start" and "progress" in types and types[-1] == "done"
    assert [e["seq"] for e in events] == list(range(len(events)))
    assert svc.job_events(job["job_id"], since=len(events) - 1)[0]["type"] == "done"
    assert done["progress"]["type"] in ("progress", "epoch", "probe")
    assert "checkpoint written" in svc.job_log(job["job_id"])
    # the registry picks the new model up without a restart, and it serves predictions
    wait_for(lambda: model_id in [c["id"] for c in svc.list_models()], 10, "the model in list_models")
    assert svc.predict("samples:0", [model_id])["results"][model_id]["probs"].shape == (10,)
    assert [j["job_id"] for j in svc.list_jobs()] == [job["job_id"]]
    with pytest.raises(ValueError, match="already finished"):
        svc.cancel_job(job["job_id"])
    with pytest.raises(ValueError, match="only interrupted, failed or cancelled"):
        svc.resume_job(job["job_id"])
    svc.close()


@pytest.mark.slow
def test_cancel_mid_run_and_queue(root):
    mgr = JobManager(root, data="synthetic", grace_s=10)
    a = mgr.start_job(LONG)
    b = mgr.start_job({**SMOKE, "method": "pgd_at"})
    assert mgr.job_status(b["job_id"])["state"] == "queued"  # one running job per device
    wait_progress(mgr, a["job_id"])
    t0 = time.time()
    st = mgr.cancel_job(a["job_id"])
    assert st["state"] == "cancelled" and time.time() - t0 < 15
    assert not (root / f"job-{a['job_id']}-ce").exists()   # no checkpoint, partial or otherwise
    assert not [p for p in root.iterdir() if p.name.startswith(f".job-{a['job_id']}")]  # no temp folders
    # the queued job starts once the device is free; cancelling it while queued or running works too
    wait_state(mgr, b["job_id"], ("running", "done"))
    assert mgr.cancel_job(b["job_id"])["state"] in ("cancelled", "done")
    assert mgr.cancel_job(a["job_id"])["state"] == "cancelled"  # idempotent
    mgr.close()


@pytest.mark.slow
def test_crash_is_failed_with_log_tail(root, tmp_path):
    mgr = JobManager(root, data=str(tmp_path / "no-such-data"))
    job = mgr.start_job(SMOKE)
    st = wait_state(mgr, job["job_id"], ("done", "failed", "cancelled", "interrupted"))
    assert st["state"] == "failed" and st["exit_code"] not in (0, None)
    assert "No CIFAR data found" in st["error"] and "--- log tail ---" not in st["error"]  # the tail is log_tail
    assert "Traceback" in st["log_tail"] or "DataNotFoundError" in st["log_tail"]
    assert not (root / f"job-{job['job_id']}-ce").exists()
    mgr.close()


@pytest.mark.slow
def test_restart_marks_interrupted_then_resume_finishes(root):
    first = JobManager(root, data="synthetic")
    job = first.start_job(SMOKE)
    wait_progress(first, job["job_id"])
    pid = first.job_status(job["job_id"])["pid"]
    first.close()  # the service goes away ...
    os.killpg(pid, signal.SIGKILL)  # ... and so does its trainer (e.g. the machine rebooted)
    wait_for(lambda: not jobs_mod.pid_alive(pid), 10, "the trainer to die")

    second = JobManager(root, data="synthetic")  # a restarted service on the same database
    st = second.job_status(job["job_id"])
    assert st["state"] == "interrupted" and "resume" in st["error"]
    st = second.resume_job(job["job_id"])
    assert st["state"] in ("queued", "running") and st["attempts"] == 2
    done = wait_state(second, job["job_id"], ("done", "failed", "cancelled", "interrupted"))
    assert done["state"] == "done", done["error"]
    assert (root / done["checkpoint"] / "card.json").is_file()
    second.close()


def test_records_are_shared_through_sqlite(root):
    """Two managers (two service processes) see the same records; the database is in WAL mode."""
    a, b = JobManager(root, data="synthetic"), JobManager(root, data="synthetic")
    with sqlite3.connect(a.db_path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    job = a.start_job(LONG)
    assert b.job_status(job["job_id"])["state"] in ("queued", "running")
    assert b.cancel_job(job["job_id"])["state"] == "cancelled"  # cancelled from the other manager
    assert a.job_status(job["job_id"])["state"] == "cancelled"
    a.close()
    b.close()


def test_unknown_ids_and_bad_arguments(root):
    mgr = JobManager(root, data="synthetic")
    for bad in ("0123456789ab", "../../etc", 42):
        with pytest.raises(NotFoundError):
            mgr.job_status(bad)
    job_id = mgr.start_job({**SMOKE})["job_id"]
    with pytest.raises(ValueError, match="since must be"):
        mgr.job_events(job_id, since=-1)
    with pytest.raises(ValueError, match="tail must be"):
        mgr.job_log(job_id, tail=0)
    mgr.cancel_job(job_id)
    mgr.close()


def test_trainable_datasets_are_those_whose_training_images_the_data_root_holds(tmp_path):
    """The Train page offers a data-set choice from this list: an ImageFolder tree counts for the data set
    whose class folders it has, a torchvision folder for its own data set."""
    from backend.core.datasets import get_dataset

    def tree(root, classes):
        for c in classes:
            (root / "train" / c).mkdir(parents=True)
        return str(root)

    assert jobs_mod.trainable_datasets("synthetic") == ["cifar10"]  # the synthetic task trains in its place
    assert jobs_mod.trainable_datasets(str(tmp_path / "missing")) == []
    assert jobs_mod.trainable_datasets(tree(tmp_path / "c10", get_dataset("cifar10").classes)) == ["cifar10"]
    assert jobs_mod.trainable_datasets(tree(tmp_path / "c100", get_dataset("cifar100").classes)) == ["cifar100"]
    assert jobs_mod.trainable_datasets(tree(tmp_path / "other", ["a", "b"])) == []
    both = tmp_path / "both"
    tree(both, get_dataset("cifar10").classes)
    (both / "cifar-100-python").mkdir()  # a torchvision CIFAR-100 root beside a CIFAR-10 ImageFolder tree
    assert jobs_mod.trainable_datasets(str(both)) == ["cifar10", "cifar100"]
