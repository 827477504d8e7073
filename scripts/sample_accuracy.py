"""How each model does on the offline sample images: the 20 original CIFAR-10 test images that foolbox
ships, the images every page opens on when no data set is installed (the first view a new user sees).

    python scripts/sample_accuracy.py [--checkpoints checkpoints] [--dataset cifar10]

Prints one line per model: correct of N, and the mean probability of its top-1 class (a model that is
right with 20% confidence reads as barely answering in a demo), then a grid of every image's prediction
per model (upper case: correct). Clean images only; nothing is attacked.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from backend.core.checkpoints import list_checkpoints, load_checkpoint  # noqa: E402
from backend.core.data import sample_images  # noqa: E402
from backend.train.registry import METHODS  # noqa: E402


def sample_predictions(ckpt_dir: Path, dataset: str = "cifar10") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(predicted labels (n,), top-1 probabilities (n,), true labels (n,)) of a checkpoint on the samples."""
    split = sample_images(dataset)
    model = load_checkpoint(ckpt_dir).model
    with torch.no_grad():
        p = model(split.float_images(range(len(split)))).softmax(1)
    conf, pred = p.max(1)
    return pred, conf, split.labels


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoints", type=Path, default=ROOT / "checkpoints")
    ap.add_argument("--dataset", default="cifar10")
    a = ap.parse_args(argv)
    cards = [c for c in list_checkpoints(a.checkpoints, METHODS) if c.get("dataset", "cifar10") == a.dataset]
    if not cards:
        print(f"no {a.dataset} checkpoints in {a.checkpoints}", file=sys.stderr)
        return 1
    classes = sample_images(a.dataset).classes
    grid = {}
    print(f"{'model':<28}{'correct':>10}{'mean top-1 p':>14}")
    for card in cards:
        pred, conf, y = sample_predictions(a.checkpoints / card["id"], a.dataset)
        ok = pred == y
        grid[card["id"]] = [classes[int(k)].upper() if good else classes[int(k)] for k, good in zip(pred, ok)]
        print(f"{card['id']:<28}{f'{int(ok.sum())} / {len(y)}':>10}{float(conf.mean()):>14.2f}")
    y = sample_images(a.dataset).labels
    print()
    print(f"{'image':<7}{'true':<12}" + "".join(f"{m[:11]:<12}" for m in grid))
    for i in range(len(y)):
        print(f"{i:<7}{classes[int(y[i])]:<12}" + "".join(f"{grid[m][i]:<12}" for m in grid))
    return 0


if __name__ == "__main__":
    sys.exit(main())
