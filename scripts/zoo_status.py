"""Where a long CPU zoo run stands: what `scripts/train_zoo.sh status OUT` prints.

    python scripts/zoo_status.py OUT [--state OUT/runs] [--methods ce pgd_at ...] [--n-aa 1000]

The CPU zoo takes many hours on two cores, across restarts: `train_zoo.sh cpu` resumes each training from
STATE/<method>/, `train_zoo.sh eval` measures each model in steps and keeps AutoAttack's finished chunks in
STATE/aa/. Per model this reads those files (it runs nothing and changes nothing) and prints one line:
  - training: epochs done of the run's epochs, the last validation accuracy (clean / robust), the CPU time so
    far in core-hours and, at the run's own pace so far, about how many more it needs; a trained model: its
    epochs and measured core-hours;
  - evaluation: the card's clean, PGD-20, AutoAttack, mCA and mAUROC (%, "-" while missing), the AutoAttack
    chunks finished so far (images and the robust share among them, a running figure) while its number is
    missing, and whether the reference embedding is there.
A last line sums the training core-hours (finished and in progress) and the estimated remainder of the runs
in progress. Exit 0 when every model is trained and fully evaluated, 3 otherwise.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from backend.train.registry import ZOO  # noqa: E402

METRICS = (("clean", "clean"), ("pgd20", "PGD-20"), ("autoattack", "AA"), ("mca", "mCA"), ("mauroc", "mAUROC"))
REFERENCE = "reference_embedding.safetensors"


def _read(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def training(out: Path, state: Path, method: str) -> tuple[str, float, float | None, bool]:
    """(text, core-hours spent, core-hours still needed or None, trained?) for one model."""
    card = _read(out / method / "card.json")
    if card is not None:
        tr = card.get("training") or {}
        cpu = tr.get("cpu_s")
        hours = f", {cpu / 3600:.2f} core-h" if cpu is not None else ""
        return f"trained ({tr.get('epochs', '?')} epochs{hours})", (cpu or 0) / 3600, 0.0, True
    st = _read(state / method / "state.json")
    if st is None:
        return "not started", 0.0, None, False
    total = int((st.get("config") or {}).get("epochs") or 0)
    done, cpu = int(st.get("epoch", 0)), float(st.get("cpu_s") or 0.0)
    steps = int(st.get("step_in_epoch") or 0)
    hist = st.get("history") or []
    val = "; last val " + " / ".join("-" if hist[-1].get(k) is None else f"{100 * hist[-1][k]:.1f}"
                                     for k in ("val_clean", "val_robust")) if hist else ""
    part = f" (+{steps} steps)" if steps else ""
    phase = "" if st.get("phase", "train") == "train" else f", {st['phase']} phase"
    # the pace so far: CPU time per epoch of progress (an unfinished epoch counts by its steps; before the
    # first epoch ends the steps per epoch are not known yet, and neither is the pace)
    left = None
    if done and st.get("phase", "train") == "train":
        progress = done + steps / _steps_per_epoch(st)
        left = cpu * (total - progress) / progress / 3600
    more = f", about {left:.1f} more at this pace" if left is not None else ""
    return (f"training: epoch {done} of {total} done{part}{phase}{val}; {cpu / 3600:.2f} core-h so far{more}",
            cpu / 3600, left, False)


def _steps_per_epoch(st: dict) -> int:
    """Steps in one epoch of the run: the steps of the finished epochs over their count (st["epoch"] >= 1)."""
    done, steps, g = int(st["epoch"]), int(st.get("step_in_epoch") or 0), int(st.get("global_step") or 0)
    return max(1, round((g - steps) / done))


def aa_progress(state: Path, method: str, weights: Path) -> tuple[int, int, float | None, int] | None:
    """(images attacked, robust among them, mean seconds per chunk or None, chunks being measured now) in the
    newest AutoAttack chunk folder of `method` written after its weights (evaluate.py keeps one folder per
    weights, subset and settings; a worker measuring a chunk holds its `chunk-NNNN.claim`); None when there is
    none."""
    if not weights.exists():
        return None
    since = weights.stat().st_mtime
    folders = [d for d in (state / "aa").glob(f"{method}-*") if d.is_dir()]
    chunks = {d: [c for c in d.glob("chunk-*.json") if c.stat().st_mtime >= since] for d in folders}
    chunks = {d: cs for d, cs in chunks.items() if cs}
    if not chunks:
        return None
    newest = max(chunks, key=lambda d: max(c.stat().st_mtime for c in chunks[d]))
    recs = [rec for c in chunks[newest] if (rec := _read(c))]
    robust = [r for rec in recs for r in rec.get("robust", [])]
    times = [float(rec["time_s"]) for rec in recs if rec.get("time_s") is not None]
    return (len(robust), sum(bool(r) for r in robust), sum(times) / len(times) if times else None,
            len(list(newest.glob("chunk-*.claim"))))


def evaluation(out: Path, state: Path, method: str, n_aa: int) -> tuple[str, bool]:
    """(text, complete?) for one model's measurements."""
    card = _read(out / method / "card.json")
    if card is None:
        return "", False
    m = card.get("metrics") or {}
    parts = [f"{label} {'-' if m.get(k) is None else f'{100 * m[k]:.1f}'}" for k, label in METRICS]
    if m.get("autoattack") is not None:
        parts[2] += f" (N {m.get('n_autoattack')})"
    else:
        prog = aa_progress(state, method, out / method / "model.safetensors")
        if prog:
            n, r, chunk_s, busy = prog
            pace = "" if chunk_s is None else f"; {chunk_s / 60:.0f} min per chunk"
            now = f"; {busy} chunk{'s' if busy != 1 else ''} being measured" if busy else ""
            parts[2] += f" ({n} of {n_aa} images attacked, {100 * r / n:.1f}% robust so far{pace}{now})"
    ref = (out / method / REFERENCE).exists()
    parts.append(f"reference map {'yes' if ref else 'no'}")
    return ", ".join(parts), ref and all(m.get(k) is not None for k, _ in METRICS)


def report(out: Path, state: Path, methods: list[str], n_aa: int) -> tuple[list[str], bool]:
    lines, spent, left, done = [], 0.0, 0.0, True
    for method in methods:
        text, hours, more, trained = training(out, state, method)
        ev, complete = evaluation(out, state, method, n_aa)
        spent += hours
        left += more or 0.0
        done = done and trained and complete
        lines.append(f"{method:8} {text}" + (f"; {ev}" if ev else ""))
    lines.append(f"training so far: {spent:.2f} core-hours; about {left:.1f} more for the runs in progress "
                 "(runs not started are not counted)")
    return lines, done


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path, help="the zoo's output folder (train_zoo.sh cpu OUT)")
    ap.add_argument("--state", type=Path, default=None, help="resume state (default OUT/runs)")
    ap.add_argument("--methods", nargs="+", default=list(ZOO))
    ap.add_argument("--n-aa", type=int, default=1000, help="the AutoAttack images the evaluation aims at")
    a = ap.parse_args(argv)
    lines, done = report(a.out, a.state or a.out / "runs", a.methods, a.n_aa)
    print("\n".join(lines))
    return 0 if done else 3


if __name__ == "__main__":
    sys.exit(main())
