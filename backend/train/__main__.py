"""Command line: python -m backend.train --method rsupcon --width 32 --epochs 30 --data DIR --out checkpoints/NAME

Explicit flags override the preset (--preset smoke | short | full; default full). Under
`torchrun --nproc_per_node=N` the same command trains with DistributedDataParallel (gloo on CPU,
nccl on GPU). SIGTERM/SIGINT stop within a step: an "error" event with "cancelled": true is written,
the resume state is saved, no checkpoint appears, and the exit code is 128 + the signal number.
Any failure exits non-zero with the traceback on stderr.
"""
from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from pathlib import Path

from backend.train.config import METHODS, PRESETS, SCHEDULES
from backend.train.loop import RunOptions, train
from backend.train.methods import Cancelled

log = logging.getLogger("backend.train")


def _int_at_least(lo: int):
    def parse(s: str) -> int:
        try:
            v = int(s)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {s!r}") from None
        if v < lo:
            raise argparse.ArgumentTypeError(f"must be >= {lo}, got {v}")
        return v
    return parse


def _positive_float(s: str) -> float:
    try:
        v = float(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {s!r}") from None
    if not v > 0 or v != v or v == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {s}")
    return v


def _non_negative_float(s: str) -> float:
    return 0.0 if s.strip() in ("0", "0.0") else _positive_float(s)


def _pixel_units(text: str) -> float:
    """'8/255' or '0.0314' -> float in [0, 1] (argparse type)."""
    try:
        num, _, den = text.partition("/")
        value = float(num) / (float(den) if den else 1.0)
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number or a fraction like 8/255") from None
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"{text!r} is outside [0, 1] (pixel units)")
    return value


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m backend.train", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--method", required=True, choices=METHODS)
    ap.add_argument("--out", required=True, type=Path, help="checkpoint folder (its name is the model id)")
    ap.add_argument("--preset", default="full", choices=tuple(PRESETS))
    ap.add_argument("--data", help="data root, or 'synthetic' (default: backend.core.data.resolve_root())")
    ap.add_argument("--width", type=int, choices=(16, 32, 64))
    ap.add_argument("--epochs", type=_int_at_least(1))
    ap.add_argument("--subset", type=_int_at_least(0), help="training images (0 = all 49,000)")
    ap.add_argument("--batch-size", type=_int_at_least(1))
    ap.add_argument("--lr", type=_positive_float)
    ap.add_argument("--schedule", choices=SCHEDULES)
    ap.add_argument("--warmup-epochs", type=_non_negative_float)
    ap.add_argument("--attack-steps", type=_int_at_least(1), help="PGD steps for training and val")
    ap.add_argument("--trades-beta", type=_positive_float)
    ap.add_argument("--temperature", type=_positive_float, help="contrastive temperature (source: 0.07)")
    ap.add_argument("--head-bn", action="store_true", default=None,
                    help="BatchNorm1d in the projection head (not in the source; off by default)")
    ap.add_argument("--eps", type=_pixel_units, help="L-inf radius in pixel units, e.g. 8/255")
    ap.add_argument("--step-size", type=_pixel_units, help="PGD step in pixel units, e.g. 2/255")
    ap.add_argument("--probe-epochs", type=_int_at_least(1))
    ap.add_argument("--probe-batch-size", type=_int_at_least(1))
    ap.add_argument("--adv-probe", action="store_true", default=None,
                    help="fit the linear probe on PGD examples of the full model (supcon/rsupcon)")
    ap.add_argument("--val-n", type=_int_at_least(0), help="held-out images validated (of 1,000)")
    ap.add_argument("--val-robust-n", type=_int_at_least(0), help="of those, attacked each validation")
    ap.add_argument("--val-every", type=_int_at_least(1))
    ap.add_argument("--seed", type=_int_at_least(0))
    ap.add_argument("--log-every", type=_int_at_least(1), help="steps between progress events")
    ap.add_argument("--compile", action="store_true", default=None, help="torch.compile the network")
    ap.add_argument("--no-amp", dest="amp", action="store_false", default=None,
                    help="no bf16 autocast on CUDA")
    ap.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    ap.add_argument("--threads", type=_int_at_least(1), help="CPU threads (default: all cores)")
    ap.add_argument("--resume", action="store_true", help="continue from the state in --state-dir")
    ap.add_argument("--state-dir", type=Path, help="resume state folder (default runs/<out name>)")
    ap.add_argument("--save-every-min", type=_non_negative_float, default=10.0,
                    help="extra mid-epoch state saves (minutes; 0 = only at epoch ends)")
    ap.add_argument("--events", type=Path, help="append JSON-lines progress events to this file")
    ap.add_argument("--no-progress", action="store_true", help="no tqdm bar")
    ap.add_argument("-v", "--verbose", action="store_true")
    return ap


def parse(argv: list[str] | None = None):
    """(TrainConfig, RunOptions) from the command line; argparse errors (exit 2) for bad values."""
    from backend.train.config import make_config

    ap = build_parser()
    a = ap.parse_args(argv)
    overrides = {k: getattr(a, k) for k in (
        "method", "width", "epochs", "subset", "batch_size", "lr", "schedule", "warmup_epochs",
        "attack_steps", "trades_beta", "temperature", "head_bn", "eps", "step_size", "probe_epochs", "probe_batch_size",
        "adv_probe",
        "val_n", "val_robust_n",
        "val_every", "seed", "log_every", "compile", "amp", "data")}
    try:
        cfg = make_config(a.preset, **overrides)
        from backend.core.checkpoints import validate_id
        validate_id(a.out.name)
    except ValueError as e:
        ap.error(str(e))
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
