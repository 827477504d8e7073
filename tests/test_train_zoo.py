"""The GPU zoo script (scripts/train_zoo.sh gpu), dry-run on the CPU with the smoke preset.

The same script, the same commands: five trainings at once, resumed from their state folders,
then evaluation of what finished, a status line per model and exit 3 until everything is done.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from backend.train.registry import ZOO as METHODS

REPO = Path(__file__).resolve().parents[1]


def _zoo(out: Path, **env) -> subprocess.CompletedProcess:
    e = dict(os.environ, PYTHON=sys.executable, PRESET="smoke", DEVICE="cpu", N_PGD="8", N_AA="0",
             OMP_NUM_THREADS="1", **env)
    return subprocess.run(["bash", str(REPO / "scripts/train_zoo.sh"), "gpu", str(out), "synthetic"],
                          cwd=REPO, env=e, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_gpu_zoo_script_dry_run_trains_evaluates_and_resumes(tmp_path):
    out = tmp_path / "zoo"
    # a chunk with no time left for training starts nothing and asks for another chunk
    first = _zoo(out, CHUNK_S="20", EVAL_S="15")
    assert first.returncode == 3, first.stderr
    assert [ln for ln in first.stdout.splitlines() if ln.startswith("zoo ") and "training" in ln][:5]
    assert not any((out / m / "card.json").exists() for m in METHODS)

    second = _zoo(out)
    assert second.returncode == 0, second.stdout + second.stderr + "".join(
        (out / f"{m}.log").read_text()[-2000:] for m in METHODS if (out / f"{m}.log").exists())
    for m in METHODS:
        assert f"zoo {m}: evaluated" in second.stdout
        card = json.loads((out / m / "card.json").read_text())
        assert card["method"] == m and card["status"] == "smoke" and card["train_config"]["preset"] == "smoke"
        metrics = card["metrics"]
        assert metrics["n_pgd20"] == 8 and 0 <= metrics["pgd20"] <= 1 and metrics["se_pgd20"] is not None
        assert (out / "runs" / m / "state.json").exists()  # resume state kept beside the checkpoints

    # everything done: another chunk trains nothing (no new log lines) and exits 0
    sizes = {m: (out / f"{m}.log").stat().st_size for m in METHODS}
    third = _zoo(out)
    assert third.returncode == 0 and {m: (out / f"{m}.log").stat().st_size for m in METHODS} == sizes


def test_gpu_zoo_script_rejects_an_unknown_mode(tmp_path):
    r = subprocess.run(["bash", str(REPO / "scripts/train_zoo.sh"), "tpu", str(tmp_path)], capture_output=True,
                       text=True, cwd=REPO)
    assert r.returncode == 2 and "cpu or gpu" in r.stderr


def test_cpu_zoo_script_trains_the_fast_recipe(tmp_path):
    """scripts/train_zoo.sh cpu with the default recipe (FastNet w64, bf16, cosine) plus an EXTRA_FAST option, one
    epoch of ce on the synthetic task: the card says what the recipe is."""
    e = dict(os.environ, PYTHON=sys.executable, METHODS="ce", EPOCHS="1", OMP_NUM_THREADS="1", EXTRA_FAST="--ema 0.9")
    r = subprocess.run(["bash", str(REPO / "scripts/train_zoo.sh"), "cpu", str(tmp_path / "zoo"), "synthetic"],
                       cwd=REPO, env=e, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    card = json.loads((tmp_path / "zoo" / "ce" / "card.json").read_text())
    tc = card["train_config"]
    assert (card["arch"], card["width"], tc["epochs"], tc["schedule"], tc["cpu_bf16"], tc["ema"],
            tc["label_smoothing"]) == ("fastnet", 64, 1, "cosine", True, 0.9, 0.0)
    assert (tmp_path / "zoo" / "runs" / "ce" / "state.json").exists()
    bad = subprocess.run(["bash", str(REPO / "scripts/train_zoo.sh"), "cpu", str(tmp_path / "z2"), "synthetic"],
                         cwd=REPO, env={**e, "RECIPE": "huge"}, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "RECIPE must be fast or previous" in bad.stderr
