"""Evaluation: numbers in range, robust <= clean, reproducible, written into the card; the CLI."""
from __future__ import annotations

import pytest
from PIL import Image

from backend.core.checkpoints import load_checkpoint, read_card
from backend.core.errors import Cancelled
from backend.eval.evaluate import evaluate_checkpoint, evaluate_model, main
from backend.train.inputs import synthetic_task
from tests.helpers import CIFAR10_CLASSES, tiny_split, write_tiny_checkpoint


def test_evaluate_model_numbers_and_invariants(tmp_path):
    model = load_checkpoint(write_tiny_checkpoint(tmp_path, "m")).model
    split = tiny_split()
    r = evaluate_model(model, split, n_clean=20, n_pgd=20, steps=3, batch_size=16)
    assert r["n_clean"] == 20 and r["n_pgd3"] == 20 and r["autoattack"] is None
    assert 0 <= r["pgd3"] <= r["clean"] <= 1  # same balanced subset for both
    assert set(r["per_class_clean"]) == set(CIFAR10_CLASSES)
    assert r["eval"]["seed"] == 0 and r["eval"]["eps_255"] == 8 and r["eval"]["data_variant"] == "synthetic-test"
    assert evaluate_model(model, split, n_clean=20, n_pgd=20, steps=3, batch_size=7) == r  # batching, seed
    full = evaluate_model(model, split, n_pgd=0)
    assert full["n_clean"] == 40 and full["pgd20"] is None


def test_a_stop_raises_the_one_cancellation_signal(tmp_path):
    """should_stop is polled per batch: once it is true, errors.Cancelled (what tasks and the service raise)."""
    model = load_checkpoint(write_tiny_checkpoint(tmp_path, "m")).model
    polls = []

    def stop_on_second_batch() -> bool:
        polls.append(1)
        return len(polls) >= 2

    with pytest.raises(Cancelled, match="evaluation cancelled"):
        evaluate_model(model, tiny_split(), n_clean=20, n_pgd=0, batch_size=8, should_stop=stop_on_second_batch)
    assert len(polls) == 2  # it stopped at the batch where the stop was asked, not later


def test_eps_zero_pgd_equals_clean(tmp_path):
    model = load_checkpoint(write_tiny_checkpoint(tmp_path, "m")).model
    r = evaluate_model(model, tiny_split(), n_clean=20, n_pgd=20, eps=0.0, steps=2)
    assert r["pgd2"] == r["clean"]


def test_evaluate_checkpoint_writes_metrics_into_the_card(tmp_path):
    ckpt = write_tiny_checkpoint(tmp_path, "m")
    r = evaluate_checkpoint(ckpt, split=tiny_split(), n_pgd=10, steps=2, n_aa=4, batch_size=8)
    card = read_card(ckpt)
    for k in ("clean", "n_clean", "pgd2", "n_pgd2", "autoattack", "n_autoattack", "per_class_clean", "eval"):
        assert card["metrics"][k] == r[k]
    assert r["n_autoattack"] == 4 and 0 <= r["autoattack"] <= 1
    load_checkpoint(ckpt)  # weights untouched, hash still matches


def test_autoattack_runs_the_100_iteration_components_not_torchattacks_10(tmp_path):
    """The AutoAttack figure is the one backend.attacks gives with aa_steps iterations on the same
    balanced subset (torchattacks.AutoAttack would silently use 10)."""
    import numpy as np
    import torch

    from backend.attacks import AttackSpec, run_attack
    from backend.core.data import balanced_indices

    model = load_checkpoint(write_tiny_checkpoint(tmp_path, "m")).model
    split = tiny_split()
    r = evaluate_model(model, split, n_clean=20, n_pgd=0, n_aa=8, aa_steps=7, batch_size=8,
                       aa_impl="torchattacks")
    assert r["eval"]["autoattack_steps"] == 7 and r["n_autoattack"] == 8
    idx = balanced_indices(split.labels.numpy(), 8, 0)
    y = split.labels[idx]
    direct = run_attack(model, split.float_images(idx), y, AttackSpec(method="autoattack", eps=8 / 255, steps=7))
    assert r["autoattack"] == float(((direct.pred_clean == y) & (direct.pred_adv == y)).float().mean())
    assert evaluate_model(model, split, n_clean=20, n_pgd=0)["eval"]["autoattack_steps"] is None
    assert np.isfinite(r["autoattack"]) and torch.is_tensor(direct.x_adv)


def test_reference_autoattack_is_pyautoattack_on_the_balanced_subset(tmp_path):
    """Cards' AutoAttack comes from the reference package (standard version, L-inf), on the same
    balanced seeded subset, with its standard error; it never exceeds clean accuracy there."""
    import numpy as np
    import pyautoattack
    import torch

    from backend.core.data import balanced_indices

    torch.manual_seed(0)  # a linear classifier: cheap enough for the attacks' full budgets
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, 10)).eval()
    split = tiny_split()
    r = evaluate_model(model, split, n_clean=40, n_pgd=0, n_aa=10, batch_size=8)
    assert r["eval"]["autoattack_impl"] == f"pyautoattack {pyautoattack.__version__}"
    assert r["eval"]["autoattack_steps"] == 100 and r["n_autoattack"] == 10
    idx = balanced_indices(split.labels.numpy(), 10, 0)
    x, y = split.float_images(idx), split.labels[idx]
    aa = pyautoattack.AutoAttack(model, norm="Linf", eps=8 / 255, version="standard", seed=0, device="cpu")
    _, y_adv = aa.run_standard_evaluation(x, y, batch_size=8)
    assert r["autoattack"] == float((y_adv == y).float().mean())
    with torch.no_grad():
        clean_on_subset = float((model(x).argmax(1) == y).float().mean())
    assert r["autoattack"] <= clean_on_subset
    p = r["autoattack"]
    assert r["se_autoattack"] == np.sqrt(p * (1 - p) / 10) and r["se_pgd20"] is None
    with pytest.raises(ValueError, match="aa_impl"):
        evaluate_model(model, split, n_aa=4, aa_impl="cleverhans")


def test_only_autoattack_updates_that_part_of_the_card(tmp_path):
    """--only-autoattack re-measures AutoAttack alone: clean and PGD numbers in the card stay."""
    ckpt = write_tiny_checkpoint(tmp_path, "m")
    evaluate_checkpoint(ckpt, split=tiny_split(), n_pgd=10, steps=2, n_aa=0)
    before = read_card(ckpt)["metrics"]
    r = evaluate_checkpoint(ckpt, split=tiny_split(), only_autoattack=True, n_aa=4, aa_impl="torchattacks",
                            aa_steps=2, batch_size=8)
    after = read_card(ckpt)["metrics"]
    assert set(r) == {"autoattack", "n_autoattack", "se_autoattack", "per_class_autoattack", "autoattack_prefix"}
    for k in ("clean", "n_clean", "pgd2", "n_pgd2", "per_class_clean"):
        assert after[k] == before[k]
    assert after["n_autoattack"] == 4 and after["eval"]["autoattack_steps"] == 2
    assert after["eval"]["pgd_steps"] == 2 and after["eval"]["time_s"] == before["eval"]["time_s"]
    with pytest.raises(ValueError, match="n_aa"):
        evaluate_checkpoint(ckpt, split=tiny_split(), only_autoattack=True, n_aa=0)


def test_bad_autoattack_settings_fail_before_any_work_and_leave_the_card(tmp_path):
    ckpt = write_tiny_checkpoint(tmp_path, "m")
    before = read_card(ckpt)
    calls = []
    with pytest.raises(ValueError, match="steps"):
        evaluate_checkpoint(ckpt, split=tiny_split(), n_pgd=10, n_aa=4, aa_steps=0, aa_impl="torchattacks",
                            should_stop=lambda: calls.append(1) or False)
    assert calls == [] and read_card(ckpt) == before


def test_cli_on_an_imagefolder_tree_is_reproducible(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ROBUSTLENS_CACHE", str(tmp_path / "cache"))
    x, y = synthetic_task(20, seed=3)
    for split in ("train", "test"):
        for i, (img, label) in enumerate(zip(x, y)):
            d = tmp_path / "tree" / split / CIFAR10_CLASSES[int(label)]
            d.mkdir(parents=True, exist_ok=True)
            Image.fromarray(img.permute(1, 2, 0).numpy()).save(d / f"{i}.png")
    ckpt = write_tiny_checkpoint(tmp_path / "ckpts", "m")
    argv = ["--checkpoint", str(ckpt), "--data", str(tmp_path / "tree"), "--n-pgd", "10", "--device", "cpu"]
    assert main(argv) == 0
    first = read_card(ckpt)["metrics"]
    table = capsys.readouterr().out
    assert "pgd20" in table and "airplane" in table
    assert main(argv) == 0
    second = read_card(ckpt)["metrics"]
    first["eval"].pop("time_s"), first["eval"].pop("date"), second["eval"].pop("time_s"), second["eval"].pop("date")
    assert first == second and first["n_clean"] == 20 and first["n_pgd20"] == 10


def test_bad_arguments_raise(tmp_path):
    model = load_checkpoint(write_tiny_checkpoint(tmp_path, "m")).model
    with pytest.raises(ValueError, match="n_pgd"):
        evaluate_model(model, tiny_split(), n_pgd=-1)
    with pytest.raises(ValueError, match="n_clean"):
        evaluate_model(model, tiny_split(), n_clean=0)


def test_chunked_reference_autoattack_resumes_and_matches_its_chunks(tmp_path, monkeypatch):
    """--aa-state: each chunk is one reference run kept on disk; a rerun measures only the missing
    chunks and gives the same numbers; a stop between chunks keeps what was finished."""
    import numpy as np
    import torch

    import backend.eval.evaluate as ev
    from backend.core.data import balanced_indices

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, 10)).eval()
    split = tiny_split()
    state = tmp_path / "aa"
    r = evaluate_model(model, split, n_clean=1, n_pgd=0, n_aa=10, batch_size=8, aa_state=state, aa_chunk=4)
    assert sorted(p.name for p in state.iterdir()) == ["chunk-0000.json", "chunk-0001.json", "chunk-0002.json"]
    idx = balanced_indices(split.labels.numpy(), 10, 0)
    x, y = split.float_images(idx), split.labels[idx]
    direct = np.concatenate([ev._reference_autoattack(model, x[i:i + 4], y[i:i + 4], 8 / 255, 0, 8, "cpu")
                             for i in range(0, 10, 4)])
    assert r["autoattack"] == float(direct.mean()) and r["n_autoattack"] == 10
    assert r["eval"]["autoattack_chunks"] == "runs of 4 images, each with seed 0"

    calls = []
    real = ev._reference_autoattack
    monkeypatch.setattr(ev, "_reference_autoattack", lambda m, xs, *a: calls.append(len(xs)) or real(m, xs, *a))
    (state / "chunk-0001.json").unlink()
    again = evaluate_model(model, split, n_clean=1, n_pgd=0, n_aa=10, batch_size=8, aa_state=state, aa_chunk=4)
    assert calls == [4] and again["autoattack"] == r["autoattack"]

    fresh = tmp_path / "aa2"
    stops = iter([False, False, False, True])  # clean batch, AutoAttack batch, chunk 0; stop before chunk 1
    with pytest.raises(Cancelled):
        evaluate_model(model, split, n_clean=1, n_pgd=0, n_aa=10, batch_size=8, aa_state=fresh, aa_chunk=4,
                       should_stop=lambda: next(stops))
    assert [p.name for p in fresh.iterdir()] == ["chunk-0000.json"]
    with pytest.raises(ValueError, match="reference AutoAttack only"):
        evaluate_model(model, split, n_aa=4, aa_impl="torchattacks", aa_state=fresh)


def _fake_reference(calls, barrier=None):
    """A stand-in for the reference AutoAttack: 'robust' = even labels; records (thread, first label) per
    call; with a barrier, each thread's first call waits until every thread is measuring a chunk."""
    import threading

    import numpy as np

    first: set = set()

    def fake(model, xs, ys, *a):
        me = threading.get_ident()
        calls.append((me, tuple(ys.tolist())))
        if barrier is not None and me not in first:
            first.add(me)
            barrier.wait(timeout=20)
        return (ys.numpy() % 2 == 0).astype(np.bool_)

    return fake


def test_autoattack_workers_sharing_a_state_measure_each_chunk_once(tmp_path, monkeypatch):
    """Two workers with the same --aa-state split the chunks between them (each claims one before
    measuring it), wait for each other's, and both return every chunk's results in order."""
    import threading

    import numpy as np
    import torch

    import backend.eval.evaluate as ev

    monkeypatch.setattr(ev, "CLAIM_POLL_S", 0.01)
    calls: list = []
    monkeypatch.setattr(ev, "_reference_autoattack", _fake_reference(calls, threading.Barrier(2)))
    x, y = torch.rand(10, 3, 8, 8), torch.arange(10) % 10
    state, out, errors = tmp_path / "aa", {}, []

    def worker(k):
        try:
            out[k] = ev._chunked_reference_autoattack(None, x, y, 8 / 255, 0, 8, "cpu", state, 2, lambda: False)
        except Exception as e:  # surfaced below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors and not any(t.is_alive() for t in threads)
    expected = (y.numpy() % 2 == 0)
    assert np.array_equal(out[0], expected) and np.array_equal(out[1], expected)
    measured = sorted(c[1] for c in calls)
    assert measured == [tuple(y[i:i + 2].tolist()) for i in range(0, 10, 2)]  # each chunk once
    assert len({c[0] for c in calls}) == 2  # both workers measured
    assert sorted(p.name for p in state.iterdir()) == [f"chunk-{i:04d}.json" for i in range(5)]  # no claims left


def test_autoattack_chunks_claimed_by_a_live_worker_are_waited_for_and_stale_claims_taken_over(tmp_path,
                                                                                            monkeypatch):
    import json
    import os
    import socket
    import subprocess
    import sys
    import threading
    import time

    import numpy as np
    import torch

    import backend.eval.evaluate as ev

    monkeypatch.setattr(ev, "CLAIM_POLL_S", 0.01)
    calls: list = []
    monkeypatch.setattr(ev, "_reference_autoattack", _fake_reference(calls))
    x, y = torch.rand(8, 3, 8, 8), torch.tensor([0, 1, 2, 3, 4, 5, 6, 7])
    state = tmp_path / "aa"
    state.mkdir()
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    host = socket.gethostname()
    (state / "chunk-0000.claim").write_text(json.dumps({"pid": gone.pid, "host": host}))  # its process is gone
    (state / "chunk-0001.claim").write_text(json.dumps({"pid": os.getpid(), "host": host,
                                                          "since": time.time()}))  # a live worker's
    # a live pid that started after the claim was written: the claimer died and its pid was reused
    (state / "chunk-0002.claim").write_text(json.dumps({"pid": os.getpid(), "host": host, "since": 1e9}))
    result = {}
    t = threading.Thread(target=lambda: result.update(r=ev._chunked_reference_autoattack(
        None, x, y, 8 / 255, 0, 8, "cpu", state, 2, lambda: False)))
    t.start()
    deadline = time.monotonic() + 20
    while len(calls) < 3:  # chunks 0 and 2 (taken over) and 3 measured; chunk 1 waited for
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert t.is_alive() and sorted(c[1] for c in calls) == [(0, 1), (4, 5), (6, 7)]
    # the live worker finishes chunk 1 with its own numbers: the waiting one takes them as they are
    (state / "c1.tmp").write_text(json.dumps({"labels": [2, 3], "robust": [True, True]}))
    os.replace(state / "c1.tmp", state / "chunk-0001.json")  # as a worker writes it: atomically
    (state / "chunk-0001.claim").unlink()
    t.join(20)
    assert not t.is_alive() and len(calls) == 3
    assert np.array_equal(result["r"], [True, False, True, True, True, False, True, False])
    assert not list(state.glob("*.claim"))


def test_evaluate_checkpoint_keeps_autoattack_chunks_per_weights(tmp_path):
    ckpt = write_tiny_checkpoint(tmp_path, "m")
    evaluate_checkpoint(ckpt, split=tiny_split(), only_autoattack=True, n_aa=4, batch_size=8,
                        aa_state=tmp_path / "state", aa_chunk=2)
    (folder,) = (tmp_path / "state").iterdir()
    assert folder.name.startswith("m-") and len(list(folder.iterdir())) == 2
