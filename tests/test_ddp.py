"""DistributedDataParallel on CPU: two gloo processes train the smoke preset and rank 0 writes the
checkpoint and events; a resumed run continues from the state both ranks saved."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from backend.core.checkpoints import load_checkpoint

REPO = Path(__file__).resolve().parent.parent


def torchrun(args, tmp_path, timeout=300):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m",
           "backend.train", *args]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
@pytest.mark.parametrize("method", ["rsupcon", "pgd_at"])
def test_two_process_gloo_smoke(method, tmp_path):
    out = tmp_path / "ckpts" / f"ddp-{method}"
    args = ["--method", method, "--preset", "smoke", "--data", "synthetic", "--subset", "16", "--batch-size", "8",
            "--val-n", "8", "--val-robust-n", "4", "--attack-steps", "1", "--probe-batch-size", "8",
            "--out", str(out), "--state-dir", str(tmp_path / "state"), "--events", str(tmp_path / "ev.jsonl"),
            "--threads", "1", "--no-progress", "--device", "cpu"]
    r = torchrun(args, tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    card = load_checkpoint(out).card
    assert card["training"]["world_size"] == 2 and card["training"]["batch_size"] == 8
    events = [json.loads(x) for x in (tmp_path / "ev.jsonl").read_text().splitlines()]
    assert [e["type"] for e in events].count("start") == 1  # only rank 0 writes events
    assert events[-1]["type"] == "done"
    state = tmp_path / "state"
    assert (state / "state.json").is_file() and list(state.glob("rng-rank1-*.safetensors"))
    # resuming a finished run reports it done without training again
    r = torchrun(args + ["--resume"], tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    events = [json.loads(x) for x in (tmp_path / "ev.jsonl").read_text().splitlines()]
    assert events[-1]["type"] == "done" and "already finished" in events[-1]["message"]
