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
    assert r.returncode == 2 and "cpu, eval, status or gpu" in r.stderr


def test_cpu_zoo_script_trains_the_fast_recipe(tmp_path):
    """scripts/train_zoo.sh cpu with the default recipe (FastNet w32, fp32, cosine) plus an EXTRA_FAST option, one
    epoch of ce on the synthetic task: the card says what the recipe is; CPU_BF16=1 and WIDTH change it."""
    e = dict(os.environ, PYTHON=sys.executable, METHODS="ce", EPOCHS="1", OMP_NUM_THREADS="1", EXTRA_FAST="--ema 0.9")
    r = subprocess.run(["bash", str(REPO / "scripts/train_zoo.sh"), "cpu", str(tmp_path / "zoo"), "synthetic"],
                       cwd=REPO, env=e, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    card = json.loads((tmp_path / "zoo" / "ce" / "card.json").read_text())
    tc = card["train_config"]
    assert (card["arch"], card["width"], tc["epochs"], tc["schedule"], tc["cpu_bf16"], tc["ema"],
            tc["label_smoothing"]) == ("fastnet", 32, 1, "cosine", False, 0.9, 0.0)
    assert (tmp_path / "zoo" / "runs" / "ce" / "state.json").exists()
    r = subprocess.run(["bash", str(REPO / "scripts/train_zoo.sh"), "cpu", str(tmp_path / "z16"), "synthetic"],
                       cwd=REPO, env={**e, "CPU_BF16": "1", "WIDTH": "16", "EXTRA_FAST": "--subset 128"},
                       capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    card = json.loads((tmp_path / "z16" / "ce" / "card.json").read_text())
    assert (card["width"], card["train_config"]["cpu_bf16"], card["train_config"]["ema"]) == (16, True, 0.0)
    assert card["training"]["n_train"] == 128  # one step: bf16 is many times slower on a CPU without native bf16
    bad = subprocess.run(["bash", str(REPO / "scripts/train_zoo.sh"), "cpu", str(tmp_path / "z2"), "synthetic"],
                         cwd=REPO, env={**e, "RECIPE": "huge"}, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "RECIPE must be fast or previous" in bad.stderr


def test_cpu_zoo_eval_measures_every_number_once_and_installs(tmp_path):
    """scripts/train_zoo.sh eval: clean / PGD-20, the reference AutoAttack in resumable chunks (AA_WORKERS=2: two
    processes share them), mCA / mAUROC and the reference embedding for each trained model; a second run finds
    everything done and measures nothing again;
    INSTALL=1 copies the evaluated models into the checkpoints folder of the script's tree."""
    import shutil

    tree = tmp_path / "tree"  # a copy of the script in a tree of its own, so INSTALL=1 writes there
    (tree / "scripts").mkdir(parents=True)
    for script in ("train_zoo.sh", "zoo_install.py"):
        shutil.copy(REPO / "scripts" / script, tree / "scripts" / script)
    env = dict(os.environ, PYTHON=sys.executable, METHODS="ce", OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    from PIL import Image

    from backend.train.inputs import synthetic_task
    from tests.helpers import CIFAR10_CLASSES, write_tiny_checkpoint

    out = tmp_path / "zoo"
    write_tiny_checkpoint(out, "ce")  # what `train_zoo.sh cpu` leaves: OUT/<method>/{card.json,model.safetensors}

    data = tmp_path / "data"  # a small test split in the ImageFolder layout (the reference embedding reads one)
    x, y = synthetic_task(40, seed=3)
    for i, (img, label) in enumerate(zip(x, y)):
        d = data / "test" / CIFAR10_CLASSES[int(label)]
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img.permute(1, 2, 0).numpy()).save(d / f"{i}.png")
    small = {**env, "N_PGD": "8", "N_AA": "4", "N_CORRUPT": "2", "N_OOD": "8", "N_REF": "20", "THREADS": "1",
             "INSTALL": "1", "ROBUSTLENS_CACHE": str(tmp_path / "cache"), "AA_WORKERS": "2"}
    r = subprocess.run(["bash", str(tree / "scripts/train_zoo.sh"), "eval", str(out), str(data)], cwd=REPO,
                       env=small, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    m = json.loads((out / "ce" / "card.json").read_text())["metrics"]
    assert (m["n_pgd20"], m["n_autoattack"], m["n_mca"]) == (8, 4, 2) and m["mauroc"] is not None
    (chunks,) = (out / "runs" / "aa").iterdir()  # the AutoAttack chunks, kept per weights
    assert [p.name for p in chunks.iterdir()] == ["chunk-0000.json"]  # measured once by two workers, no claim left
    assert (out / "ce" / "reference_embedding.safetensors").exists()
    assert sorted(p.name for p in (tree / "checkpoints" / "ce").iterdir()) == [
        "card.json", "model.safetensors", "reference_embedding.safetensors"]
    from backend.core.checkpoints import load_checkpoint

    installed = load_checkpoint(tree / "checkpoints" / "ce", verify=True).card  # weights copied intact
    assert installed["display_name"] == "CE w16 (0 ep)"  # backend.train.loop.model_name, from the card
    notes = installed["notes"]
    assert "ResNet-18" in notes and "0 epochs" in notes and "PGD-20 on 8," in notes and "AutoAttack" in notes
    assert "on 4 class-balanced" in notes and "--n 20" in notes and "training attack: none" in notes
    card_before = (out / "ce" / "card.json").read_bytes()
    again = subprocess.run(["bash", str(tree / "scripts/train_zoo.sh"), "eval", str(out), str(data)], cwd=REPO,
                           env={**small, "INSTALL": "0"}, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and "zoo ce: evaluated" in again.stdout
    assert again.stderr == "" and (out / "ce" / "card.json").read_bytes() == card_before  # nothing measured again


def test_zoo_eval_watch_waits_for_untrained_models_and_stops_on_a_failure(tmp_path):
    """WATCH=SECONDS: `train_zoo.sh eval` runs again while a model is untrained (exit 3), so it can run beside the
    trainings from the start; any other failure ends the watch with that status at once."""
    env = dict(os.environ, PYTHON=sys.executable, METHODS="ce", WATCH="1", OMP_NUM_THREADS="1")
    out = tmp_path / "zoo"
    out.mkdir()
    r = subprocess.run(["timeout", "6", "bash", str(REPO / "scripts/train_zoo.sh"), "eval", str(out)], cwd=REPO,
                       env=env, capture_output=True, text=True)
    assert r.returncode == 124, r.stderr[-2000:]  # still waiting when the timeout stopped it
    assert r.stdout.count("zoo ce: not trained yet") >= 2 and "again in 1 s" in r.stdout
    (out / "ce").mkdir()
    (out / "ce" / "card.json").write_text("{")  # a broken card: the evaluation fails, the watch ends
    bad = subprocess.run(["timeout", "60", "bash", str(REPO / "scripts/train_zoo.sh"), "eval", str(out)], cwd=REPO,
                         env=env, capture_output=True, text=True)
    assert bad.returncode not in (0, 3, 124) and "again in" not in bad.stdout


def test_zoo_keep_carries_a_zoo_in_progress_to_a_new_machine(tmp_path):
    """scripts/zoo_keep.py: `save` copies trained models, training logs, the AutoAttack's finished chunks and the
    resume state of unfinished trainings into KEEP (no claims, no temporary files, no state of a trained
    method); `restore` lays them out again on a machine that has nothing, and keeps a machine's own files."""
    sys.path.insert(0, str(REPO / "scripts"))
    import zoo_keep

    out, state, keep = tmp_path / "out", tmp_path / "out" / "runs", tmp_path / "keep"

    def put(p: Path, text: str) -> Path:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
        return p

    for f in ("card.json", "model.safetensors"):  # ce trained; its leftover resume state is not carried
        put(out / "ce" / f, f"ce {f}")
    put(state / "ce" / "state.json", "ce done")
    put(out / "ce.events.jsonl", "ce log")
    for f in ("state.json", "tensors-3.safetensors", "rng-rank0-3.safetensors"):  # rsupcon still training
        put(state / "rsupcon" / f, f"rsupcon {f}")
    put(state / "rsupcon" / "tensors-4.safetensors.tmp", "half written")
    put(out / "rsupcon.events.jsonl", "rsupcon log")
    aa = state / "aa" / "ce-0123abcd"
    put(aa / "chunk-0000.json", '{"robust": []}')
    put(aa / "chunk-0001.claim", "12345")
    put(state / "aa" / "trades-99" / "chunk-0000.json", "{}")  # a method not asked for

    assert zoo_keep.main(["save", str(out), str(keep), "--methods", "ce", "rsupcon"]) == 0
    got = sorted(str(p.relative_to(keep)) for p in keep.rglob("*") if p.is_file())
    assert got == ["ce.events.jsonl", "ce/card.json", "ce/model.safetensors", "rsupcon.events.jsonl",
                   "runs/aa/ce-0123abcd/chunk-0000.json", "runs/rsupcon/rng-rank0-3.safetensors",
                   "runs/rsupcon/state.json", "runs/rsupcon/tensors-3.safetensors"]

    # the run goes on: a newer state supersedes the kept one, then rsupcon is trained and its state leaves KEEP
    (state / "rsupcon" / "tensors-3.safetensors").rename(state / "rsupcon" / "tensors-5.safetensors")
    zoo_keep.save(out, keep, state, ["ce", "rsupcon"], resume_state=False)  # a mid-session save keeps the last state
    assert (keep / "runs" / "rsupcon" / "tensors-3.safetensors").exists()
    zoo_keep.save(out, keep, state, ["ce", "rsupcon"])
    assert sorted(p.name for p in (keep / "runs" / "rsupcon").iterdir()) == [
        "rng-rank0-3.safetensors", "state.json", "tensors-5.safetensors"]
    put(out / "rsupcon" / "card.json", "rsupcon card")
    put(out / "rsupcon" / "model.safetensors", "rsupcon weights")
    res = zoo_keep.save(out, keep, state, ["ce", "rsupcon"])
    assert res["removed"] == 3 and not (keep / "runs" / "rsupcon").exists()
    assert (keep / "rsupcon" / "model.safetensors").read_text() == "rsupcon weights"

    # a new machine: everything comes back where train_zoo.sh looks for it
    out2 = tmp_path / "new"
    assert zoo_keep.main(["restore", str(keep), str(out2)]) == 0
    assert (out2 / "ce" / "model.safetensors").read_text() == "ce model.safetensors"
    assert (out2 / "runs" / "aa" / "ce-0123abcd" / "chunk-0000.json").exists()
    assert (out2 / "rsupcon.events.jsonl").read_text() == "rsupcon log"
    # a machine that was handed back keeps its own files and its own run's state
    out3 = tmp_path / "kept"
    put(out3 / "ce" / "card.json", "newer card")
    zoo_keep.save(out, keep, state, ["ce", "rsupcon"])
    put(keep / "runs" / "trades" / "state.json", "kept trades")  # as an earlier save of a run in progress left it
    put(keep / "runs" / "trades" / "tensors-2.safetensors", "kept trades weights")
    put(out3 / "runs" / "trades" / "state.json", "own trades")
    res = zoo_keep.restore(keep, out3, out3 / "runs")
    assert (out3 / "ce" / "card.json").read_text() == "newer card"
    assert sorted(p.name for p in (out3 / "runs" / "trades").iterdir()) == ["state.json"]
    assert (out3 / "runs" / "trades" / "state.json").read_text() == "own trades"
    assert res["kept"] == 3 and (out3 / "ce" / "model.safetensors").exists()
    with pytest.raises(SystemExit):
        zoo_keep.main(["restore", str(tmp_path / "nothing"), str(out3)])
