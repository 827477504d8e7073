"""Command line: python -m backend.train --method rsupcon --width 32 --epochs 30 --data DIR --out checkpoints/NAME
           or: python -m backend.train --config run.json --out checkpoints/NAME

--config FILE reads a JSON object of TrainConfig fields (what a training job writes; the card's
train_config has the same form). Explicit flags override the file, and the file (or the flags) override
the preset (--preset smoke | short | gpu12 | full; default full). Both build one dict that
backend.train.config.config_from_dict validates. Under `torchrun --nproc_per_node=N` the same command
trains with DistributedDataParallel (gloo on CPU, nccl on GPU). SIGTERM/SIGINT stop within a step: an
"error" event with "cancelled": true is written, the resume state is saved, no checkpoint appears, and
the exit code is 128 + the signal number. Any failure exits non-zero with the traceback on stderr.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
from pathlib import Path

from backend.core.archs_meta import WIDTHS
from backend.core.validation import parse_int_at_least
from backend.train.config import DEVICES, SCHEDULES, TrainConfig, config_from_dict
from backend.train.registry import METHODS, PRESETS, datasets

log = logging.getLogger("backend.train")


def _integer(s: str) -> int:
    try:
        return int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {s!r}") from None


def _number(s: str) -> float:
    try:
        return float(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {s!r}") from None


def _int_at_least(name: str, lo: int):  # for the run options (config fields: config_from_dict checks those)
    def parse(s: str) -> int:
        try:
            return parse_int_at_least(name, s, lo)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
    return parse


def _non_negative_float(s: str) -> float:
    v = _number(s)
    if not 0 <= v < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {s}")
    return v


def _pixel_units(text: str) -> float:
    """'8/255' or '0.0314' -> float (argparse type; the range is config_from_dict's to check)."""
    try:
        num, _, den = text.partition("/")
        return float(num) / (float(den) if den else 1.0)
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number or a fraction like 8/255") from None


# config flags: (TrainConfig field, argparse keyword arguments); each sets that one field
_CONFIG_FLAGS = (
    ("method", dict(choices=METHODS)),
    ("preset", dict(choices=tuple(PRESETS), help="default: full (or the --config file's)")),
    ("dataset", dict(choices=datasets(), help="default: cifar10")),
    ("data", dict(help="data root, or 'synthetic' (default: backend.core.data.resolve_root())")),
    ("arch", dict(help="a registered architecture (default resnet18, the paper's; fastnet: the compact CPU net)")),
    ("arch_args", dict(help='its builder arguments as a JSON object, e.g. \'{"name": "resnet18"}\' for torchvision')),
    ("width", dict(type=int, choices=WIDTHS)),
    ("epochs", dict(type=_integer)),
    ("subset", dict(type=_integer, help="training images (0 = all but the 1,000 held out)")),
    ("batch_size", dict(type=_integer)),
    ("lr", dict(type=_number)),
    ("schedule", dict(choices=SCHEDULES)),
    ("warmup_epochs", dict(type=_number)),
    ("label_smoothing", dict(type=_number, help="in the training cross-entropy (default 0)")),
    ("ema", dict(type=_number, help="decay of a moving average of the weights per step (default 0 = off)")),
    ("attack_steps", dict(type=_integer, help="PGD steps for training and val")),
    ("trades_beta", dict(type=_number)),
    ("temperature", dict(type=_number, help="contrastive temperature (source: 0.07)")),
    ("head_bn", dict(action="store_true",
                     help="BatchNorm1d in the projection head (not in the source; off by default)")),
    ("eps", dict(type=_pixel_units, help="L-inf radius in pixel units, e.g. 8/255")),
    ("step_size", dict(type=_pixel_units, help="PGD step in pixel units, e.g. 2/255")),
    ("probe_epochs", dict(type=_integer)),
    ("probe_batch_size", dict(type=_integer)),
    ("adv_probe", dict(action="store_true",
                       help="fit the linear probe on PGD examples of the full model (supcon/rsupcon)")),
    ("val_n", dict(type=_integer, help="held-out images validated (of 1,000)")),
    ("val_robust_n", dict(type=_integer, help="of those, attacked each validation")),
    ("val_every", dict(type=_integer)),
    ("seed", dict(type=_integer)),
    ("log_every", dict(type=_integer, help="steps between progress events")),
    ("compile", dict(action="store_true", help="torch.compile the network")),
    ("amp", dict(flag="--no-amp", action="store_false", help="no bf16 autocast on CUDA")),
    ("cpu_bf16", dict(action="store_true", help="bf16 autocast and channels-last on a CPU (fast with AVX512-BF16)")),
)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m backend.train", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", type=Path, help="JSON file of TrainConfig fields (a training job writes one)")
    ap.add_argument("--out", required=True, type=Path, help="checkpoint folder (its name is the model id)")
    cfg = ap.add_argument_group("training config (each flag sets one TrainConfig field)")
    for name, kw in _CONFIG_FLAGS:
        kw = dict(kw)
        flag = kw.pop("flag", "--" + name.replace("_", "-"))
        cfg.add_argument(flag, dest=name, default=None, **kw)
    ap.add_argument("--device", default="auto", choices=DEVICES)
    ap.add_argument("--threads", type=_int_at_least("threads", 1), help="CPU threads (default: all cores)")
    ap.add_argument("--resume", action="store_true", help="continue from the state in --state-dir")
    ap.add_argument("--state-dir", type=Path, help="resume state folder (default runs/<out name>)")
    ap.add_argument("--save-every-min", type=_non_negative_float, default=10.0,
                    help="extra mid-epoch state saves (minutes; 0 = only at epoch ends)")
    ap.add_argument("--events", type=Path, help="append JSON-lines progress events to this file")
    ap.add_argument("--no-progress", action="store_true", help="no tqdm bar")
    ap.add_argument("-v", "--verbose", action="store_true")
    return ap


def read_config_file(path: Path) -> dict:
    """The JSON object of a --config file; ValueError when it is unreadable or not an object."""
    try:
        d = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"--config {path}: {e}") from None
    if not isinstance(d, dict):
        raise ValueError(f"--config {path}: expected a JSON object of TrainConfig fields, got {type(d).__name__}")
    return d


def config_dict(a: argparse.Namespace) -> dict:
    """The config dict the command line describes: the --config file, then every flag given."""
    d = read_config_file(a.config) if a.config is not None else {}
    d.update({name: getattr(a, name) for name, _ in _CONFIG_FLAGS if getattr(a, name) is not None})
    return d


def parse(argv: list[str] | None = None) -> tuple[TrainConfig, object, bool]:
    """(TrainConfig, RunOptions, verbose) from the command line; argparse errors (exit 2) for bad values."""
    ap = build_parser()
    a = ap.parse_args(argv)
    try:
        d = config_dict(a)
        if "method" not in d:
            raise ValueError("--method is required (or a --config file with a method)")
        cfg = config_from_dict(d)
        from backend.core.checkpoints import validate_id
        validate_id(a.out.name)
    except ValueError as e:
        ap.error(str(e))
    from backend.train.loop import RunOptions  # torch: only once the arguments are known to be good

    opts = RunOptions(out=a.out, state_dir=a.state_dir, events=a.events, resume=a.resume, device=a.device,
                      threads=a.threads, save_every_min=a.save_every_min, progress_bar=not a.no_progress)
    return cfg, opts, a.verbose


def main(argv: list[str] | None = None) -> int:
    cfg, opts, verbose = parse(argv)
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    received: list[int] = []

    def on_signal(signum, frame):
        if received and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: stop now
        received.append(signum)
        log.warning("received %s: stopping after the current step", signal.Signals(signum).name)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    from backend.train.loop import train
    from backend.train.steps import Cancelled

    try:
        out = train(cfg, opts, should_stop=lambda: bool(received))
    except Cancelled:
        log.warning("cancelled; resume with --resume")
        return 128 + (received[0] if received else signal.SIGTERM)
    except Exception:
        log.exception("training failed")
        return 1
    log.info("checkpoint written to %s", out)
    return 0


if __name__ == "__main__":
    code = main()
    # Every file is written and closed by now (events line by line, state and checkpoint atomically).
    # Skip the interpreter's finalisation: tearing down torch and the training tensors took ~1.3 s
    # idle and over 5 s on a loaded 2-core CPU, so a cancelled job outlived the job manager's SIGTERM
    # grace and was reported as "ignored SIGTERM for 5.0 s", then SIGKILLed.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
