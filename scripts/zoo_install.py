"""Install an evaluated zoo into the app's checkpoints folder: what `scripts/train_zoo.sh eval OUT` runs with
INSTALL=1 once every model is evaluated.

    python scripts/zoo_install.py OUT [--methods ce pgd_at trades rsupcon supcon] [--checkpoints checkpoints]

OUT/<method>/ holds what `train_zoo.sh cpu` trained and `train_zoo.sh eval` measured. Every model must have its
card's clean, PGD-20, reference AutoAttack, mCA and mAUROC numbers and its reference embedding; if one lacks
any, nothing is installed (exit 2, the missing pieces named). Otherwise, per method, the card, weights and
reference embedding replace checkpoints/<method>/, and the installed card gets
  - its display name from backend.train.loop.model_name (the name every trainer writes now, so a model
    trained by an older naming reads like the rest: 'PGD-AT FastNet w64 (15 ep)');
  - notes that say how it was trained and measured, written from the card's own fields (network, epochs x
    images, batch, schedule, precision, the options beyond the paper's recipe (label smoothing, EMA), training
    attack, hardware, measured CPU time, and each metric's N).
The weights are copied byte for byte (the card's sha256 still holds).
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from backend.core import archs  # noqa: E402
from backend.core.checkpoints import CARD, WEIGHTS, write_card  # noqa: E402
from backend.explain.embed import load_reference  # noqa: E402
from backend.train.loop import model_name  # noqa: E402
from backend.train.registry import ZOO  # noqa: E402

REFERENCE = "reference_embedding.safetensors"
NEEDED = ("clean", "pgd20", "autoattack", "mca", "mauroc")


def missing(model_dir: Path) -> list[str]:
    """What `model_dir` still lacks before it can be installed (empty when complete)."""
    if not (model_dir / CARD).exists():
        return ["not trained (no card)"]
    metrics = json.loads((model_dir / CARD).read_text()).get("metrics") or {}
    gaps = [f"metrics.{k}" for k in NEEDED if metrics.get(k) is None]
    if not (model_dir / REFERENCE).exists():
        gaps.append(REFERENCE)
    return gaps


def _join(*parts: object) -> str:
    return ", ".join(str(p) for p in parts if p)


def notes(card: dict, n_reference: int) -> str:
    """How the model was trained and measured, from its card (a field the card lacks is left out)."""
    tc, tr, m = card.get("train_config") or {}, card.get("training") or {}, card["metrics"]
    net = archs.get_arch(card["arch"]).label or card["arch"]
    width = f" width {card['width']}" if card.get("width") else ""
    run = _join(tr.get("core_hours") is not None and f"{tr['core_hours']:.2f} core-hours measured",
                tr.get("time_s") and f"{tr['time_s'] / 60:.0f} min wall-clock")
    images = f" x {tr['n_train']:,} images" if tr.get("n_train") else ""
    optim = _join(tr.get("batch_size") and f"batch {tr['batch_size']}",
                  tc.get("lr") and f"SGD lr {tc['lr']:g} {tc.get('schedule', '')}".rstrip()
                  + (f" with {tc['warmup_epochs']:g}-epoch warm-up" if tc.get("warmup_epochs") else ""),
                  tr.get("precision"))
    extras = _join(tc.get("label_smoothing") and f"label smoothing {tc['label_smoothing']:g}",
                   tc.get("ema") and f"a moving average of the weights (EMA {tc['ema']:g})")
    probe = f"; then a linear probe on the frozen encoder for {tc['probe_epochs']} epochs" \
        if card["method"] in ("supcon", "rsupcon") and tc.get("probe_epochs") else ""
    sets = len((m.get("ood") or {}).get("sets") or {})
    return (
        f"{card.get('status')}: trained by `scripts/train_zoo.sh cpu OUT` on {tr.get('hardware', 'unknown hardware')}"
        f"{f' ({run})' if run else ''}. {net}{width}, {tr.get('epochs')} epochs{images} "
        f"({card.get('data_variant')}){f', {optim}' if optim else ''}{f', with {extras}' if extras else ''}; "
        f"training attack: "
        f"{tr.get('train_attack') or 'none'}{probe}. Every option is in train_config. Test metrics by "
        f"`scripts/train_zoo.sh eval OUT` (python -m backend.eval.evaluate, seed 0): clean on {m['n_clean']:,} "
        f"test images, PGD-20 on {m['n_pgd20']:,}, reference AutoAttack (pyautoattack, standard) on "
        f"{m['n_autoattack']:,} class-balanced images, mCA on {m['n_mca']:,} per corruption cell, mAUROC on "
        f"{m['n_ood_in']:,} test images against {sets} outlier sets; reference map: "
        f"python -m backend.eval.references --n {n_reference}.")


def install(out: Path, methods: list[str], checkpoints: Path) -> list[str]:
    """Copy every model of `methods` from `out` into `checkpoints` (see the module docstring); returns the
    installed folders. ValueError, before anything is copied, when a model is incomplete."""
    gaps = {m: missing(out / m) for m in methods}
    if any(gaps.values()):
        raise ValueError("; ".join(f"{m}: {', '.join(g)}" for m, g in gaps.items() if g))
    done = []
    for m in methods:
        src, dst = out / m, checkpoints / m
        card = json.loads((src / CARD).read_text())
        ref = load_reference(src)
        card["display_name"] = model_name(card["method"], card["arch"], card.get("width"),
                                          card["training"]["epochs"])
        card["notes"] = notes(card, len(ref.labels) if ref is not None else 0)
        if dst.exists():
            shutil.rmtree(dst)
        dst.mkdir(parents=True)
        for name in (WEIGHTS, REFERENCE):
            shutil.copy2(src / name, dst / name)
        write_card(dst, card)
        done.append(str(dst))
    return done


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path, help="the zoo's output folder (train_zoo.sh cpu OUT)")
    ap.add_argument("--methods", nargs="+", default=list(ZOO))
    ap.add_argument("--checkpoints", type=Path, default=ROOT / "checkpoints")
    a = ap.parse_args(argv)
    try:
        for path in install(a.out, a.methods, a.checkpoints):
            print(f"installed {path}")
    except ValueError as e:
        print(f"zoo_install: nothing installed: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
