"""The README figure: a few of the offline sample images (the CIFAR-10 test images inside the
foolbox package, never ../shared), each shipped model's saliency side by side, on the clean image
and on that model's own white-box adversarial image, with the predictions.

    python scripts/make_figure.py [--out assets/saliency_grid.png] [--images samples:0,samples:3]
        [--method integrated_gradients] [--eps 8] [--steps 10] [--checkpoints checkpoints]

Everything goes through backend.service (the same calls the app makes). Prints the predictions.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from backend.core.runtime import quiet_openmp

quiet_openmp()  # before torch loads
ROOT = Path(__file__).resolve().parent.parent

from app.widgets.imaging import compose_grid_png, overlay
from backend.service import Service


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=ROOT / "assets" / "saliency_grid.png")
    ap.add_argument("--images", default="samples:0,samples:3,samples:7,samples:12")
    ap.add_argument("--method", default="integrated_gradients")
    ap.add_argument("--eps", type=float, default=8.0, help="L-inf budget in 1/255 units")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--checkpoints", type=Path, default=ROOT / "checkpoints")
    ap.add_argument("--px", type=int, default=128)
    a = ap.parse_args(argv)
    svc = Service(a.checkpoints)
    try:
        models = [m["id"] for m in svc.list_models()]
        names = {m["id"]: m.get("display_name") or m["id"] for m in svc.list_models()}
        spec = {"method": "pgd", "eps": a.eps / 255, "steps": a.steps}
        cols, rows, notes = ["image"] + [names[m] for m in models], [], []
        for image_id in a.images.split(","):
            img = svc.get_image(image_id)
            pixels = img["pixels"]
            res = svc.attack(image_id, spec, models, saliency=a.method)["results"]
            truth = img["class_name"]
            clean = [pixels] + [overlay(pixels, res[m]["saliency_clean"]) for m in models]
            adv = [None] + [overlay(res[m]["adv_pixels"], res[m]["saliency_adv"]) for m in models]
            rows += [(f"{truth}: clean", clean), (f"{truth}: PGD-{a.steps}", adv)]
            fmt = lambda e: f"{e['top'][0]['class_name']} {100 * e['top'][0]['prob']:.0f}%"  # noqa: E731
            notes += [[f"true: {truth}"] + [fmt(res[m]["clean"]) for m in models],
                      [""] + [fmt(res[m]["adv"]) + (" *" if res[m]["flipped"] else "") for m in models]]
            print(f"{image_id} ({truth}): " + "; ".join(
                f"{m} {fmt(res[m]['clean'])} -> {fmt(res[m]['adv'])}" for m in models))
        title = (f"{a.method.replace('_', ' ')}: clean vs own PGD-{a.steps} ({a.eps:g}/255); "
                 "* = the attack changed the prediction")
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_bytes(compose_grid_png(cols, rows, title, px=a.px, notes=notes))
        print(f"wrote {a.out}")
    finally:
        svc.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
