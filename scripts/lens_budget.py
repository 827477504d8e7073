"""Which Feature lens budget moves the shipped models' targeted images toward the class?

For each shipped checkpoint, each (norm, eps) and a few offline sample images pushed toward the next
class: the mean target probability before and after, how many images the model then predicts as the
target, and the mean L2 size of the change. Optionally writes a PNG grid (rows: model x budget,
columns: images) to look at. Numbers only; no data-set pixels are written unless --png is given (the
PNG is for looking at, never for committing).

    python3 scripts/lens_budget.py --images 0 3 7 11 --steps 60 --png test-artifacts/lens_budget.png
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from backend.explain.lens import targeted_lens  # noqa: E402
from backend.service.facade import Service  # noqa: E402


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="*", default=None, help="model ids (default: every shipped one)")
    ap.add_argument("--images", nargs="*", type=int, default=[0, 3, 7, 11], help="sample image numbers")
    ap.add_argument("--budgets", nargs="*", default=["linf:16", "linf:32", "l2:1", "l2:2", "l2:4", "l2:6", "l2:10"],
                    help="norm:eps, L-inf eps in k/255, L2 eps in pixel units")
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--png", default=None, help="write the images here (to look at; do not commit)")
    a = ap.parse_args(argv)
    torch.manual_seed(0)
    svc = Service(device="cpu")
    ids = a.models or [c["id"] for c in svc.list_models()]
    ids_img = [f"samples:{i}" for i in a.images]
    rows, labels = [], []
    print(f"{'model':8} {'budget':9} {'p0':>5} {'p_end':>6} {'hit':>5} {'L2':>5}  path (mean p every steps/6)")
    for mid in ids:
        model = svc.models.model(mid)
        xs = torch.cat([svc.engine.model_input(mid, i)[0] for i in ids_img])  # (n,3,32,32)
        ys = [int(svc.images.get(i)["label"]) for i in ids_img]
        tgt = [(y + 1) % 10 for y in ys]
        for b in a.budgets:
            norm, e = b.split(":")
            eps = float(e) / 255 if norm == "linf" else float(e)
            outs, paths, preds = [], [], []
            for k in range(len(ids_img)):
                with torch.enable_grad():
                    xa, path = targeted_lens(model, xs[k:k + 1], tgt[k], eps, a.steps, norm)
                with torch.no_grad():
                    preds.append(int(model(xa).argmax()))
                outs.append(xa)
                paths.append([p[0] for p in path])
            xa = torch.cat(outs)
            pa = np.array(paths)  # (n, steps+1)
            l2 = (xa - xs).flatten(1).norm(dim=1).mean().item()
            hit = sum(int(p == t) for p, t in zip(preds, tgt))
            marks = " ".join(f"{v:.2f}" for v in pa.mean(0)[:: max(1, a.steps // 6)])
            print(f"{mid:8} {b:9} {pa[:, 0].mean():5.2f} {pa[:, -1].mean():6.2f} {hit:2d}/{len(ids_img):<2d} "
                  f"{l2:5.2f}  {marks}", flush=True)
            rows.append(xa)
            labels.append(f"{mid} {b}")
        if a.png:
            rows.append(xs)
            labels.append(f"{mid} clean")
    if a.png:
        from PIL import Image
        grid = torch.stack(rows)  # (R, n, 3, 32, 32)
        r, n = grid.shape[:2]
        img = grid.permute(0, 3, 1, 4, 2).reshape(r * 32, n * 32, 3).numpy()
        Image.fromarray((img * 255).round().astype(np.uint8)).resize((n * 128, r * 128), Image.NEAREST).save(a.png)
        print("rows:", "; ".join(labels))
        names = svc.classes()
        print("targets:", ", ".join(names[t] for t in tgt))


if __name__ == "__main__":
    main()
