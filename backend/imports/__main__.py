"""python -m backend.imports SOURCE NAME [options]: write a published or own model as a checkpoint.

  python -m backend.imports robustbench Wong2020Fast --dataset cifar10 --threat-model Linf
  python -m backend.imports torchvision resnet50 --pretrained          # ImageNet weights (online)
  python -m backend.imports timm resnet18 --dataset cifar100           # random weights, CIFAR-100 head
  python -m backend.imports file my.safetensors --arch resnet18 --arch-args '{"width": 32}'
  ROBUSTLENS_TRUSTED_ENTRYPOINTS=pkg.mod:build python -m backend.imports entrypoint pkg.mod:build

Then measure it like every model: python -m backend.eval.evaluate --checkpoint checkpoints/ID ...
"""
from __future__ import annotations

import argparse
import json
import logging
import sys

import torch

from backend.imports.sources import SOURCES, THREAT_MODELS, describe_sources, import_model

log = logging.getLogger("backend.imports")


def _json_dict(s: str) -> dict:
    try:
        v = json.loads(s)
    except json.JSONDecodeError as e:
        raise argparse.ArgumentTypeError(f"not JSON: {e}") from None
    if not isinstance(v, dict):
        raise argparse.ArgumentTypeError("expected a JSON object")
    return v


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m backend.imports", description=__doc__.splitlines()[0],
                                 epilog="sources: " + "; ".join(f"{k}: {v}" for k, v in describe_sources().items()),
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("source", choices=list(SOURCES))
    ap.add_argument("name", help="zoo/model name, weights file (file) or package.module:build (entrypoint)")
    ap.add_argument("--id", dest="model_id", help="checkpoint id (default: from source and name, e.g. rb-wong2020fast)")
    ap.add_argument("--root", help="checkpoints folder (default: ROBUSTLENS_CHECKPOINTS or <repo>/checkpoints)")
    ap.add_argument("--dataset", help="data set of the model (robustbench: cifar10|cifar100|imagenet; "
                                      "default cifar10, imagenet for torchvision/timm)")
    ap.add_argument("--threat-model", default="Linf", choices=THREAT_MODELS, help="robustbench leaderboard")
    ap.add_argument("--model-dir", help="robustbench's model folder (default ~/.cache/robustlens/robustbench)")
    ap.add_argument("--pretrained", action="store_true", help="torchvision/timm: published weights (online)")
    ap.add_argument("--weights", help="torchvision: a weights name; entrypoint: a weights file")
    ap.add_argument("--arch", default="resnet18", help="file: an architecture of our registry")
    ap.add_argument("--arch-args", type=_json_dict, help="file: the architecture's arguments as JSON")
    ap.add_argument("--kwargs", type=_json_dict, help="entrypoint: the builder's keyword arguments as JSON")
    ap.add_argument("--input-size", type=int, help="input side in pixels (default: the source's or the data set's)")
    ap.add_argument("--fp16", action="store_true", help="store weights in float16 (half the size)")
    ap.add_argument("--overwrite", action="store_true", help="replace an existing checkpoint of that id")
    return ap


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    a = build_parser().parse_args(argv)
    opts = {"robustbench": dict(dataset=a.dataset or "cifar10", threat_model=a.threat_model, model_dir=a.model_dir),
            "torchvision": dict(dataset=a.dataset or "imagenet", pretrained=a.pretrained, weights=a.weights,
                                input_size=a.input_size),
            "timm": dict(dataset=a.dataset or "imagenet", pretrained=a.pretrained, input_size=a.input_size),
            "file": dict(arch=a.arch, arch_args=a.arch_args, dataset=a.dataset or "cifar10"),
            "entrypoint": dict(kwargs=a.kwargs, dataset=a.dataset or "cifar10", weights=a.weights,
                               input_size=a.input_size)}[a.source]
    try:
        out = import_model(a.source, a.name, model_id=a.model_id, root=a.root, overwrite=a.overwrite,
                           dtype=torch.float16 if a.fp16 else torch.float32, **opts)
    except (ValueError, ImportError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
