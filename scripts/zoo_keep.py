"""Carry a CPU zoo that is still being built from one build machine to the next.

    python scripts/zoo_keep.py save    OUT KEEP [--state OUT/runs] [--methods ...] [--no-resume-state]
    python scripts/zoo_keep.py restore KEEP OUT [--state OUT/runs]

`scripts/train_zoo.sh cpu` and `eval` take many hours on two cores, more than one working session, and the
machine they run on is not always handed back: what lay outside the repository (OUT and its resume state) can
be gone when work resumes. `save` copies into KEEP (a folder that is committed) what a new machine needs to
go on rather than start over:
  - each trained model: OUT/<method>/ card.json, model.safetensors (the fp16 weights that ship) and, once
    built, reference_embedding.safetensors; the card carries every number measured so far;
  - each OUT/<method>.events.jsonl (the training's own log: epochs, losses, validation, timing);
  - the reference AutoAttack's finished chunks, STATE/aa/<model folder>/chunk-NNNN.json (labels and per-image
    results; claims and temporary files are not copied);
  - unless --no-resume-state, the resume state of each training not finished yet (STATE/<method>/: fp32
    weights, optimizer momentum, RNG states; about 6 MB for FastNet w32, 16 MB for w64). A method's resume state
    is dropped from KEEP once the method is trained, so KEEP holds at most the unfinished ones.
`restore` copies KEEP back into OUT and STATE, never replacing a file that is already there (a machine that
was handed back keeps its own, newer files); then `RESUME=1 scripts/train_zoo.sh cpu` and `train_zoo.sh eval`
go on where `save` left them. Neither command trains or measures anything, and neither reads image data.
"""
from __future__ import annotations

import argparse
import filecmp
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from backend.train.registry import ZOO  # noqa: E402

MODEL_FILES = ("card.json", "model.safetensors", "reference_embedding.safetensors")
RUNS = "runs"  # KEEP/runs mirrors STATE: KEEP/runs/aa/..., KEEP/runs/<method>/...


def _copy(src: Path, dst: Path, replace: bool) -> bool:
    """Copy src to dst (making folders); False when dst exists and is kept (replace=False) or already equal."""
    if dst.exists() and (not replace or filecmp.cmp(src, dst, shallow=False)):
        return False
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(dst.name + ".tmp")
    shutil.copy2(src, tmp)
    tmp.replace(dst)
    return True


def _state_files(folder: Path) -> list[Path]:
    """The files of one resume-state or AutoAttack folder worth carrying (no claims, no half-written files)."""
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix != ".claim" and ".tmp" not in p.name)


def plan_save(out: Path, state: Path, methods: list[str], resume_state: bool) -> list[tuple[Path, str]]:
    """(source file, path inside KEEP) for everything `save` carries."""
    todo: list[tuple[Path, str]] = []
    for m in methods:
        trained = (out / m / "card.json").exists()
        if trained:
            todo += [(out / m / f, f"{m}/{f}") for f in MODEL_FILES if (out / m / f).exists()]
        events = out / f"{m}.events.jsonl"
        if events.exists():
            todo.append((events, events.name))
        if resume_state and not trained and (state / m / "state.json").exists():
            todo += [(p, f"{RUNS}/{m}/{p.name}") for p in _state_files(state / m)]
    aa = state / "aa"
    if aa.is_dir():
        for folder in sorted(d for d in aa.iterdir() if d.is_dir() and d.name.split("-")[0] in methods):
            todo += [(p, f"{RUNS}/aa/{folder.name}/{p.name}") for p in _state_files(folder)
                     if p.name.startswith("chunk-") and p.suffix == ".json"]
    return todo


def save(out: Path, keep: Path, state: Path, methods: list[str], resume_state: bool = True) -> dict[str, int]:
    """Copy OUT's and STATE's progress into KEEP (see the module doc); returns counts of what changed."""
    todo = plan_save(out, state, methods, resume_state)
    wanted = {rel for _, rel in todo}
    copied = sum(_copy(src, keep / rel, replace=True) for src, rel in todo)
    removed = 0
    # a resume state that is no longer wanted (its method is trained, or its files were superseded) goes; with
    # resume_state False KEEP's states of unfinished trainings stay (they are the last ones carried)
    for m in methods:
        folder = keep / RUNS / m
        if folder.is_dir() and (resume_state or (out / m / "card.json").exists()):
            for p in folder.iterdir():
                if f"{RUNS}/{m}/{p.name}" not in wanted:
                    p.unlink()
                    removed += 1
            if not any(folder.iterdir()):
                folder.rmdir()
    return {"files": len(todo), "copied": copied, "removed": removed}


def restore(keep: Path, out: Path, state: Path) -> dict[str, int]:
    """Copy KEEP back into OUT and STATE; a file already there is kept. A method whose training has its own
    resume state on this machine gets none of KEEP's (the two could be of different steps)."""
    copied = kept = 0
    has_own = {d.name for d in state.iterdir() if (d / "state.json").exists()} if state.is_dir() else set()
    for src in sorted(p for p in keep.rglob("*") if p.is_file()):
        rel = src.relative_to(keep)
        parts = rel.parts
        if parts[0] == RUNS:
            if len(parts) == 3 and parts[1] in has_own:
                kept += 1  # this machine's own run of that method may be at another step
                continue
            dst = state.joinpath(*parts[1:])
        elif len(parts) == 1 and not src.name.endswith(".events.jsonl"):
            continue  # KEEP's own README and the like
        else:
            dst = out / rel
        if _copy(src, dst, replace=False):
            copied += 1
        else:
            kept += 1
    return {"copied": copied, "kept": kept}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("save", help="OUT and STATE -> KEEP")
    s.add_argument("out", type=Path)
    s.add_argument("keep", type=Path)
    s.add_argument("--no-resume-state", action="store_true", help="leave unfinished trainings' state out")
    r = sub.add_parser("restore", help="KEEP -> OUT and STATE (existing files kept)")
    r.add_argument("keep", type=Path)
    r.add_argument("out", type=Path)
    s.add_argument("--methods", nargs="+", default=list(ZOO))
    for p in (s, r):
        p.add_argument("--state", type=Path, default=None, help="resume and AutoAttack state (default OUT/runs)")
    a = ap.parse_args(argv)
    state = a.state or a.out / RUNS
    if a.cmd == "save":
        if not a.out.is_dir():
            ap.error(f"{a.out} is not a folder")
        res = save(a.out, a.keep, state, a.methods, resume_state=not a.no_resume_state)
        print(f"zoo keep: {res['files']} files in {a.keep} ({res['copied']} copied, {res['removed']} removed)")
    else:
        if not a.keep.is_dir():
            ap.error(f"{a.keep} is not a folder")
        res = restore(a.keep, a.out, state)
        print(f"zoo restore: {res['copied']} files copied into {a.out} and {state}, {res['kept']} kept as they were")
    return 0


if __name__ == "__main__":
    sys.exit(main())
