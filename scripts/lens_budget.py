"""Which Feature lens budget moves the shipped models' targeted images toward the class?

For each checkpoint, each (norm, eps) and a few offline sample images pushed toward the next class
(backend.explain.lens.measure_budgets): the mean target probability before and after, how many images
the model then predicts as the target, and the mean L2 size of the change. --card records the
measurement in each model's card ("lens_measured"), where the Feature lens and the Lesson quote it
for the models it was measured on (so their captions follow the installed models, not a past zoo).
Optionally writes a PNG grid (rows: model x budget, columns: images) to look at. No data-set pixels
are written unless --png is given (the PNG is for looking at, never for committing).

    python3 scripts/lens_budget.py --images 0 1 2 3 --steps 60 --budgets linf:16 l2:2 l2:4 l2:6 l2:10 --card
    python3 scripts/lens_budget.py --table     # the cards' measurements as README's table
    python3 scripts/lens_budget.py --models pgd_at --png test-artifacts/lens_budget.png
"""
from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from app.session.honesty import budget_label  # noqa: E402
from backend.core.checkpoints import list_checkpoints, read_card, write_card  # noqa: E402
from backend.explain.lens import LENS_NORMS, measure_budgets  # noqa: E402
from backend.service.facade import Service  # noqa: E402
from backend.train.registry import METHOD_INFO, METHODS  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def parse_budget(text: str) -> tuple[str, float]:
    """'l2:6' -> ('l2', 6.0); 'linf:16' -> ('linf', 16/255): L-inf eps in k/255, L2 eps in pixel units."""
    norm, _, e = text.partition(":")
    try:
        eps = float(e)
    except ValueError:
        eps = -1.0
    if norm not in LENS_NORMS or eps <= 0:
        raise argparse.ArgumentTypeError(f"a budget is norm:eps with norm in {LENS_NORMS} and eps > 0, got {text!r}")
    return norm, eps / 255 if norm == "linf" else eps


def table(root: Path) -> list[str]:
    """README "Feature lens budgets": the cards' recorded measurements (--card) as a markdown table, one row
    per measured model (registry order), the first measured card's budgets as columns: 'p_end (hit/n)'."""
    cards = [c for c in list_checkpoints(root, METHODS) if (c.get("lens_measured") or {}).get("budgets")]
    if not cards:
        return []
    cols = [(b["norm"], b["eps"]) for b in cards[0]["lens_measured"]["budgets"]]
    out = ["| model | " + " | ".join(budget_label(n, e, word="") for n, e in cols) + " |",
           "|---" * (len(cols) + 1) + "|"]
    for c in cards:
        got = {(b["norm"], b["eps"]): b for b in c["lens_measured"]["budgets"]}
        label = METHOD_INFO[c["method"]].label if c.get("method") in METHOD_INFO else c.get("display_name", c["id"])
        cells = [f"{got[k]['p_end']:.2f} ({got[k]['hit']}/{got[k]['n']})" if k in got else "-" for k in cols]
        out.append(f"| {label} | " + " | ".join(cells) + " |")
    return out


def budget_arg(norm: str, eps: float) -> str:
    """parse_budget's inverse: ('linf', 16/255) -> 'linf:16'; ('l2', 6.0) -> 'l2:6'."""
    return f"{norm}:{round(eps * 255) if norm == 'linf' else eps:g}"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoints", type=Path, default=ROOT / "checkpoints")
    ap.add_argument("--models", nargs="*", default=None, help="model ids (default: every one in --checkpoints)")
    ap.add_argument("--images", nargs="*", type=int, default=[0, 3, 7, 11], help="sample image numbers")
    ap.add_argument("--budgets", nargs="*", type=parse_budget,
                    default=[parse_budget(b) for b in ("linf:16", "linf:32", "l2:1", "l2:2", "l2:4", "l2:6", "l2:10")],
                    help="norm:eps, L-inf eps in k/255, L2 eps in pixel units")
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--card", action="store_true", help="record the measurement in each model's card")
    ap.add_argument("--png", default=None, help="write the images here (to look at; do not commit)")
    ap.add_argument("--table", action="store_true",
                    help="measure nothing: print the cards' recorded measurements as the README's table")
    a = ap.parse_args(argv)
    if a.table:
        print("\n".join(table(a.checkpoints)))
        return
    torch.manual_seed(0)
    svc = Service(checkpoint_root=a.checkpoints, device="cpu")
    ids = a.models or [c["id"] for c in svc.list_models()]
    ids_img = [f"samples:{i}" for i in a.images]
    command = "python3 scripts/lens_budget.py " + shlex.join(
        ["--images", *map(str, a.images), "--steps", str(a.steps), "--budgets",
         *(budget_arg(n, e) for n, e in a.budgets)])
    rows, labels = [], []
    print(f"{'model':8} {'budget':9} {'p0':>5} {'p_end':>6} {'hit':>5} {'L2':>5}  path (mean p every steps/6)")
    for mid in ids:
        model = svc.models.model(mid)
        xs = torch.cat([svc.engine.model_input(mid, i)[0] for i in ids_img])  # (n,3,H,W)
        tgt = [(int(svc.images.get(i)["label"]) + 1) % len(svc.classes()) for i in ids_img]
        images: list[torch.Tensor] = []
        records = measure_budgets(model, xs, tgt, a.budgets, a.steps, collect=images if a.png else None)
        for r in records:
            b = budget_arg(r["norm"], r["eps"])
            marks = " ".join(f"{v:.2f}" for v in r["path"][:: max(1, a.steps // 6)])
            print(f"{mid:8} {b:9} {r['p_start']:5.2f} {r['p_end']:6.2f} {r['hit']:2d}/{r['n']:<2d} {r['l2']:5.2f}  "
                  f"{marks}", flush=True)
            labels.append(f"{mid} {b}")
        if a.card:
            card = read_card(a.checkpoints / mid)
            card["lens_measured"] = {"images": ids_img, "targets": "each image's next class", "steps": a.steps,
                                     "budgets": records, "command": command}
            write_card(a.checkpoints / mid, card)
        if a.png:
            rows += [*images, xs]
            labels.append(f"{mid} clean")
    if a.card:
        print(f"recorded in the cards of {', '.join(ids)}")
    if a.png:
        from PIL import Image
        grid = torch.stack(rows)  # (R, n, 3, H, W)
        r, n, _, h, w = grid.shape
        img = grid.permute(0, 3, 1, 4, 2).reshape(r * h, n * w, 3).numpy()
        Image.fromarray((img * 255).round().astype(np.uint8)).resize((n * 128, r * 128), Image.NEAREST).save(a.png)
        print("rows:", "; ".join(labels))
        print("targets:", ", ".join(svc.classes()[t] for t in tgt))


if __name__ == "__main__":
    main()
