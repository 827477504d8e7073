"""The training run: setup (device, DDP, data, model), the epoch loop with validation and resume
state, the linear probe for contrastive methods, and the final checkpoint.

`train(cfg, opts, should_stop)` is the whole run; it returns the checkpoint folder, raises
Cancelled after a requested stop (the resume state is saved, no checkpoint is written) and any
other exception after writing an "error" event. Only rank 0 writes events, state.json and the
checkpoint.
"""
from __future__ import annotations

import contextlib
import datetime
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.distributed as dist
from tqdm import tqdm

from backend.core import archs
from backend.core.checkpoints import new_card, save_checkpoint, validate_id
from backend.core.runtime import torch_threads
from backend.train import registry
from backend.train import state as st
from backend.train.config import TrainConfig, config_from_dict, lr_at, resume_mismatch
from backend.train.events import EventLog, hardware
from backend.train.inputs import load_inputs
from backend.train.probe import NearestClassMean, class_means, linear_probe, logits_classifier, validate
from backend.train.registry import PRESET_INFO
from backend.train.steps import Cancelled, Nets, StepContext, TrainNet

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunOptions:
    out: Path                                  # checkpoint folder; its name is the model id
    state_dir: Path | None = None              # default runs/<out name>
    events: Path | None = None                 # JSON-lines event file
    resume: bool = False
    device: str = "auto"                       # auto | cpu | cuda
    threads: int | None = None                 # CPU threads (default: all cores / processes)
    save_every_min: float = 10.0               # extra mid-epoch state saves; 0 = epoch ends only
    progress_bar: bool = True


@dataclass
class _Progress:
    epoch: int = 0
    step_in_epoch: int = 0
    global_step: int = 0
    phase: str = "train"  # train | probe | done
    best_metric: float | None = None
    best_epoch: int | None = None
    history: list = field(default_factory=list)
    elapsed_s: float = 0.0
    cpu_s: float = 0.0  # this process's CPU time over every session of the run: core-seconds
    serial: int = 0


def model_args(cfg: TrainConfig, num_classes: int, input_size: int) -> dict:
    """The builder arguments of cfg's architecture: cfg.arch_args, the width where the architecture takes
    one, and the data set's class count and image side. ValueError for an unknown architecture or argument."""
    spec = archs.get_arch(cfg.arch)
    args = {**cfg.arch_args, "num_classes": num_classes, "input_size": input_size}
    if "width" in spec.defaults:
        args["width"] = cfg.width
    archs.full_args(cfg.arch, args)  # checks names and choices now, before any data is read
    return args


def precision(cfg: TrainConfig, device: torch.device) -> tuple[Callable[[], contextlib.AbstractContextManager], bool]:
    """(autocast factory, channels_last) for cfg on device: bf16 autocast and channels-last on CUDA (cfg.amp,
    cfg.channels_last) and, with cfg.cpu_bf16, on the CPU; otherwise fp32 (contextlib.nullcontext)."""
    cpu_fast = device.type == "cpu" and cfg.cpu_bf16
    amp = (device.type == "cuda" and cfg.amp) or cpu_fast
    channels_last = (device.type == "cuda" and cfg.channels_last) or cpu_fast
    if not amp:
        return contextlib.nullcontext, channels_last
    return (lambda: torch.autocast(device.type, dtype=torch.bfloat16)), channels_last


def train_attack(cfg: TrainConfig) -> str | None:
    """How the method crafts its training examples, as the card states it (None for clean training)."""
    info = registry.get(cfg.method)
    if info.attack is None:
        return None
    eps = f"linf eps {cfg.eps * 255:g}/255"
    if info.attack == "fgsm":
        return f"FGSM with random start, {eps}, step {cfg.fgsm_step * 255:g}/255"
    target = {"pgd_at": "cross-entropy", "trades": "KL(clean || adversarial), TRADES start",
              "rsupcon": "the contrastive loss (RSUPCON.md)"}.get(cfg.method, "the training loss")
    return f"PGD-{cfg.attack_steps} on {target}, {eps}, step {cfg.step_size * 255:g}/255"


def model_name(method: str, arch: str, width: int | None, epochs: int) -> str:
    """A trained model's display name: the method, the network (the paper's ResNet-18 is implied), width
    and epochs: 'PGD-AT w16 (5 ep)', 'PGD-AT FastNet w64 (15 ep)'."""
    net = "" if arch == "resnet18" else f"{archs.get_arch(arch).short or arch} "
    return f"{registry.get(method).label} {net}{f'w{width} ' if width else ''}({epochs} ep)"


def _device(name: str, local_rank: int) -> torch.device:
    if name not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device={name!r}: use auto, cpu or cuda")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device='cuda' but torch sees no CUDA GPU")
    if name == "cuda" or (name == "auto" and torch.cuda.is_available()):
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def train(cfg: TrainConfig, opts: RunOptions, should_stop: Callable[[], bool] = lambda: False) -> Path:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    events = EventLog(opts.events if rank == 0 else None)
    try:
        cfg.validate()
        validate_id(Path(opts.out).name)
        device = _device(opts.device, local)
        if cfg.batch_size % world:
            raise ValueError(f"batch_size={cfg.batch_size} must be divisible by the {world} processes")
        if world > 1:
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo",
                                    timeout=datetime.timedelta(hours=2))
        return _Run(cfg, opts, device, rank, world, events, should_stop).run()
    except Cancelled:
        events.emit("error", message="cancelled: stop requested (SIGTERM/SIGINT); resume state saved",
                    cancelled=True)
        raise
    except BaseException as e:
        events.emit("error", message=f"{type(e).__name__}: {e}")
        raise
    finally:
        if world > 1 and dist.is_initialized():
            dist.destroy_process_group()


class _Run:
    def __init__(self, cfg, opts, device, rank, world, events, should_stop):
        self.cfg, self.opts, self.device, self.rank, self.world = cfg, opts, device, rank, world
        self.events, self.local_stop = events, should_stop
        self.t0 = time.time()
        self.state_dir = Path(opts.state_dir) if opts.state_dir else Path("runs") / Path(opts.out).name
        if device.type == "cpu":
            torch.set_num_threads(torch_threads(opts.threads, share=world))  # the cores shared by the ranks
        else:
            torch.backends.cudnn.benchmark = True
        self.data = load_inputs(cfg)
        dev = lambda t: t.to(device)  # noqa: E731  (uint8 images stay uint8 on the device)
        self.train_x, self.train_y = dev(self.data.train_x), dev(self.data.train_y)
        self.val_x, self.val_y = dev(self.data.val_x), dev(self.data.val_y)
        self.ncm_x, self.ncm_y = dev(self.data.ncm_x), dev(self.data.ncm_y)
        torch.manual_seed(cfg.seed)  # the same initial weights on every rank
        self.arch_args = model_args(cfg, len(self.data.classes), int(self.data.train_x.shape[-1]))
        self.model = archs.build_arch(cfg.arch, self.arch_args, head=cfg.contrastive,
                                      head_bn=cfg.head_bn).to(device)
        self.autocast, cl = precision(cfg, device)
        self._amp = self.autocast is not contextlib.nullcontext
        if cl:
            self.model.to(memory_format=torch.channels_last)
        if cfg.contrastive:  # the classifier is fit later by the probe; DDP must not track it
            self.model.classifier.requires_grad_(False)
        core = TrainNet(self.model, channels_last=cl)
        train_fwd = core
        if world > 1:
            train_fwd = torch.nn.parallel.DistributedDataParallel(
                core, device_ids=[device.index] if device.type == "cuda" else None)
        attack_fwd = core
        if cfg.compile:
            train_fwd, attack_fwd = torch.compile(train_fwd), torch.compile(core)
        self.nets = Nets(train_fwd, attack_fwd, core)
        self.opt = torch.optim.SGD([p for p in self.model.parameters() if p.requires_grad], lr=cfg.lr,
                                   momentum=cfg.momentum, weight_decay=cfg.weight_decay)
        self.gens = {"order": torch.Generator().manual_seed(cfg.seed),
                     "aug": torch.Generator().manual_seed(cfg.seed + 1 + 1000 * rank),
                     "dev": torch.Generator(device=device).manual_seed(cfg.seed + 2 + 1000 * rank)}
        # the moving average of the weights (cfg.ema): every floating tensor of the state dict
        self.ema: dict[str, torch.Tensor] | None = None
        if cfg.ema:
            self.ema = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        # with several ranks only collective checks at step boundaries are safe (see _stopping)
        self.ctx = StepContext(cfg, self.gens["aug"], self.gens["dev"], self.autocast,
                               should_stop if world == 1 else (lambda: False))
        self.n_train = len(self.train_y)
        self.batch = min(cfg.batch_size, self.n_train - self.n_train % world)
        self.steps_per_epoch = max(1, self.n_train // self.batch)
        self.p = _Progress()
        self.best_state: dict | None = None
        self.perm: torch.Tensor | None = None
        self.session_start = time.time()
        self.cpu_start = time.process_time()  # after the data are read: cpu_s counts the training itself

    # ------------------------------------------------------------------------------ helpers
    def _stopping(self) -> bool:
        if self.world == 1:
            return bool(self.local_stop())
        flag = torch.tensor([1.0 if self.local_stop() else 0.0], device=self.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item())

    def _elapsed(self) -> float:
        return self.p.elapsed_s + time.time() - self.session_start

    def _cpu(self) -> float:
        return self.p.cpu_s + time.process_time() - self.cpu_start

    def _meta(self) -> dict:
        d = dict(vars(self.p))
        d.update(config=self.cfg.to_dict(), world=self.world, elapsed_s=self._elapsed(), cpu_s=self._cpu())
        return d

    def _ema_update(self) -> None:
        """ema <- d * ema + (1 - d) * weights for every floating tensor (batch-norm statistics too); integer
        buffers are copied. d ramps up as min(ema, (1 + t) / (10 + t)) so early averages forget the
        random initialisation."""
        assert self.ema is not None
        t = self.p.global_step
        d = min(self.cfg.ema, (1 + t) / (10 + t))
        with torch.no_grad():
            for k, v in self.model.state_dict().items():
                if v.is_floating_point():
                    self.ema[k].mul_(d).add_(v.detach(), alpha=1 - d)
                else:
                    self.ema[k].copy_(v)

    @contextlib.contextmanager
    def _averaged(self):
        """The model holds the moving average inside the block (when cfg.ema), its own weights again after."""
        if self.ema is None:
            yield
            return
        own = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        self.model.load_state_dict(self.ema)
        try:
            yield
        finally:
            self.model.load_state_dict(own)

    def save_state(self) -> None:
        self.p.serial += 1
        rank_files = []
        if self.world > 1:
            if self.rank > 0:
                st.save_rank_rng(self.state_dir, self.rank, self.p.serial, self.gens)
            rank_files = [f"rng-rank{r}-{self.p.serial}.safetensors" for r in range(1, self.world)]
            dist.barrier()
        if self.rank == 0:
            tensors = {f"model/{k}": v for k, v in self.model.state_dict().items()}
            if self.best_state is not None:
                tensors.update({f"best/{k}": v for k, v in self.best_state.items()})
            if self.ema is not None:
                tensors.update({f"ema/{k}": v for k, v in self.ema.items()})
            opt_t, opt_meta = st.optimizer_tensors(self.opt)
            tensors.update(opt_t)
            tensors.update(st.rng_tensors(self.gens))
            if self.perm is not None:
                tensors["perm"] = self.perm
            st.save_state(self.state_dir, tensors, dict(self._meta(), optimizer=opt_meta), rank_files)
        if self.world > 1:
            dist.barrier()

    def load_state(self) -> bool:
        loaded = st.load_state(self.state_dir)
        if loaded is None:
            log.warning("--resume: no state in %s; starting from scratch", self.state_dir)
            return False
        tensors, meta = loaded
        why = resume_mismatch(config_from_dict(meta["config"]), self.cfg)
        if why:
            raise ValueError(f"--resume: the saved run in {self.state_dir} used a different config ({why})")
        if meta["world"] != self.world:
            raise ValueError(f"--resume: the saved run used {meta['world']} processes, now {self.world}")
        pick = lambda pre: {k[len(pre):]: v for k, v in tensors.items() if k.startswith(pre)}  # noqa: E731
        self.model.load_state_dict(pick("model/"))
        best = pick("best/")
        self.best_state = best or None
        if self.ema is not None:
            self.ema = pick("ema/") or self.ema
        st.load_optimizer(self.opt, tensors, meta["optimizer"])
        if self.rank == 0:
            st.restore_rng(tensors, self.gens)
        else:
            st.restore_rng(st.load_rank_rng(self.state_dir, f"rng-rank{self.rank}-{meta['serial']}.safetensors"),
                           self.gens)
        self.perm = tensors.get("perm")
        for k in vars(self.p):
            setattr(self.p, k, meta.get(k, getattr(self.p, k)))  # states saved before cpu_s existed lack it
        return True

    def _classifier(self, probe_done: bool):
        if self.cfg.contrastive and not probe_done:
            means = class_means(self.nets, self.ncm_x, self.ncm_y, len(self.data.classes), 512, self.autocast)
            return NearestClassMean(self.nets, means, self.autocast)
        return logits_classifier(self.nets, self.autocast)

    def _validate(self, probe_done: bool = False) -> dict:
        # under DDP only rank 0 validates, so it must not stop alone (the others would wait forever)
        stop = self.local_stop if self.world == 1 else (lambda: False)
        return validate(self._classifier(probe_done), self.nets, self.val_x, self.val_y, self.cfg, 256, stop)

    # ------------------------------------------------------------------------------ phases
    def run(self) -> Path:
        cfg = self.cfg
        resumed = self.opts.resume and self.load_state()
        self.events.emit("start", epoch=self.p.epoch, epochs=cfg.epochs, step=self.p.step_in_epoch,
                         steps_per_epoch=self.steps_per_epoch,
                         message=(f"{'resuming' if resumed else 'training'} {cfg.method} width {cfg.width} on "
                                  f"{self.n_train} images ({self.data.variant}), batch {self.batch}, "
                                  f"{hardware(self.device, self.world)}"))
        if self.p.phase == "done":
            out = Path(self.opts.out)
            if self.rank == 0 and not out.exists():  # e.g. removed since: the state holds the final model
                self._write_checkpoint(out)
            self.events.emit("done", checkpoint=str(out), message="this run had already finished")
            return out
        try:
            if self.p.phase == "train":
                self.train_epochs()
                self.p.phase = "probe" if cfg.contrastive else "final"
                final = self.best_state if self.best_state is not None else self.ema  # ema: None when off
                if final is not None:
                    self.model.load_state_dict(final)
                self.perm = None
                self.save_state()
            if cfg.contrastive and self.p.phase == "probe":
                self.probe()
        except Cancelled:
            if self.p.phase == "train":
                self.save_state()
            raise
        return self.finish()

    def train_epochs(self) -> None:
        cfg, p = self.cfg, self.p
        bar = None
        last_event = time.time()
        window_t, window_n = time.time(), 0
        loss_acc = torch.zeros((), device=self.device)
        last_save = time.time()
        while p.epoch < cfg.epochs:
            if self.perm is None:
                self.perm = torch.randperm(self.n_train, generator=self.gens["order"])
            perm = self.perm.to(self.device)
            per_rank = self.batch // self.world
            self.model.train()
            if self.rank == 0 and self.opts.progress_bar:
                bar = tqdm(total=self.steps_per_epoch, initial=p.step_in_epoch, leave=False,
                           desc=f"{cfg.method} epoch {p.epoch + 1}/{cfg.epochs}", disable=None)
            while p.step_in_epoch < self.steps_per_epoch:
                if self._stopping():
                    raise Cancelled("stop requested")
                snap = {k: g.get_state() for k, g in self.gens.items()}
                s = p.step_in_epoch
                lr = lr_at(cfg, p.global_step, self.steps_per_epoch)
                for group in self.opt.param_groups:
                    group["lr"] = lr
                lo = s * self.batch + self.rank * per_rank
                idx = perm[lo:lo + per_rank]
                try:
                    loss = registry.get(cfg.method).loss(self.nets, self.train_x[idx], self.train_y[idx], self.ctx)
                except Cancelled:  # stopped mid-step: rewind the generators to the step's start
                    for k, g in self.gens.items():
                        g.set_state(snap[k])
                    raise
                self.opt.zero_grad(set_to_none=True)
                loss.backward()
                self.opt.step()
                if self.ema is not None:
                    self._ema_update()
                loss_acc += loss.detach()
                window_n += 1
                p.step_in_epoch += 1
                p.global_step += 1
                if bar is not None:
                    bar.update(1)
                now = time.time()
                due = p.step_in_epoch % cfg.log_every == 0 or p.step_in_epoch == self.steps_per_epoch \
                    or (self.device.type == "cpu" and now - last_event > 10)
                if self.rank == 0 and due:
                    mean_loss = float(loss_acc) / window_n  # the only host sync, every log_every steps
                    ips = window_n * self.batch / max(1e-9, now - window_t)
                    left = (cfg.epochs - p.epoch) * self.steps_per_epoch - p.step_in_epoch
                    self.events.emit("progress", epoch=p.epoch + 1, epochs=cfg.epochs, step=p.step_in_epoch,
                                     steps_per_epoch=self.steps_per_epoch, loss=mean_loss, lr=lr,
                                     images_per_s=round(ips, 2), eta_s=round(left * self.batch / ips, 1))
                    if bar is not None:
                        bar.set_postfix(loss=f"{mean_loss:.3f}", ips=f"{ips:.0f}")
                    loss_acc.zero_()
                    window_t, window_n, last_event = now, 0, now
                # time-based saves only in one process: ranks' clocks could disagree on a collective
                if self.world == 1 and self.opts.save_every_min and p.step_in_epoch < self.steps_per_epoch \
                        and now - last_save > 60 * self.opts.save_every_min:
                    self.save_state()
                    last_save = time.time()
            if bar is not None:
                bar.close()
            self.end_epoch()
            p.epoch += 1
            p.step_in_epoch = 0
            self.perm = None
            self.save_state()
            last_save = time.time()
            window_t, window_n = time.time(), 0  # validation time is not training throughput
            loss_acc.zero_()

    def end_epoch(self) -> None:
        cfg, p = self.cfg, self.p
        epoch = p.epoch + 1
        record = {"epoch": epoch, "val_clean": None, "val_robust": None}
        if self.rank == 0 and (epoch % cfg.val_every == 0 or epoch == cfg.epochs) and len(self.val_y):
            with self._averaged():  # validate (and keep) the moving average when there is one
                record.update(self._validate())
                metric = record["val_robust"] if cfg.robust and record["val_robust"] is not None \
                    else record["val_clean"]
                if p.best_metric is None or metric > p.best_metric:
                    p.best_metric, p.best_epoch = metric, epoch
                    self.best_state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
            p.history.append(record)
        if self.rank == 0:
            left = (cfg.epochs - epoch) * self.steps_per_epoch
            spent = self._elapsed()
            self.events.emit("epoch", epoch=epoch, epochs=cfg.epochs, step=self.steps_per_epoch,
                             steps_per_epoch=self.steps_per_epoch, val_clean=record["val_clean"],
                             val_robust=record["val_robust"], lr=lr_at(cfg, p.global_step - 1, self.steps_per_epoch),
                             eta_s=round(spent / max(1, p.global_step) * left, 1))

    def probe(self) -> None:
        if self.world > 1:  # rank 0 chose the best encoder: everyone probes that one
            for t in self.model.state_dict().values():
                dist.broadcast(t, 0)
        self.model.classifier.requires_grad_(True)

        def on_epoch(epoch, loss):
            if self._stopping():
                raise Cancelled("stop requested")
            if self.rank == 0:
                self.events.emit("probe", epoch=epoch, epochs=self.cfg.probe_epochs, loss=loss)

        linear_probe(self.nets, self.train_x, self.train_y, self.ctx, self.rank, self.world, on_epoch)

    def finish(self) -> Path:
        out = Path(self.opts.out)
        if self.rank == 0:
            metrics = self._write_checkpoint(out)
        self.p.phase = "done"
        self.save_state()  # collective under DDP: every rank takes part
        if self.rank == 0:
            self.events.emit("done", epoch=self.cfg.epochs, epochs=self.cfg.epochs, checkpoint=str(out),
                             val_clean=metrics["val_clean"], val_robust=metrics["val_robust"],
                             message=f"saved {out} in {self._elapsed():.0f} s")
        return out

    def _write_checkpoint(self, out: Path) -> dict:
        cfg, p = self.cfg, self.p
        final = dict(p.history[-1]) if p.history else {"val_clean": None, "val_robust": None}
        if cfg.contrastive and len(self.val_y):  # the probe is the classifier: validate it
            final.update(self._validate(probe_done=True))
        elif p.best_epoch is not None:
            final = next(h for h in p.history if h["epoch"] == p.best_epoch)
        metrics = {"val_clean": final["val_clean"], "val_robust": final["val_robust"],
                   "n_val": len(self.val_y), "n_val_robust": min(cfg.val_robust_n, len(self.val_y))
                   if final["val_robust"] is not None else 0}
        attack = f"PGD-{cfg.attack_steps} linf eps {cfg.eps * 255:g}/255 step {cfg.step_size * 255:g}/255"
        cpu_s, on_cpu = self._cpu(), self.device.type == "cpu"
        training = {"time_s": round(self._elapsed(), 1), "hardware": hardware(self.device, self.world),
                    "cpu_s": round(cpu_s, 1), "core_hours": round(cpu_s / 3600, 3) if on_cpu else None,
                    "threads": torch.get_num_threads() if on_cpu else None,
                    "train_attack": train_attack(cfg), "precision": "bf16 autocast" if self._amp else "fp32",
                    "device": self.device.type, "world_size": self.world, "epochs": cfg.epochs,
                    "attack_steps": registry.get(cfg.method).training_attack_steps(cfg.attack_steps),
                    "n_train": self.n_train, "batch_size": self.batch, "best_epoch": p.best_epoch,
                    "selection": "val_robust" if cfg.robust else "val_clean",
                    "val_classifier": "linear probe (epochs: NCM on features)" if cfg.contrastive else "logits",
                    "val_attack": attack, "attack_mode": "eval", "lr_scaling": "none",
                    "history": p.history, "data_source": self.data.source}
        width = self.arch_args.get("width")
        card = new_card(out.name, cfg.method, cfg.arch, width, list(self.data.classes), arch_args=self.arch_args,
                        input_size=self.arch_args["input_size"],
                        display_name=model_name(cfg.method, cfg.arch, width, cfg.epochs),
                        dataset=cfg.dataset, data_variant=self.data.variant, train_config=cfg.to_dict(),
                        metrics=metrics, training=training, status=PRESET_INFO[cfg.preset].status,
                        notes="trained by python -m backend.train; test metrics come from backend.eval.evaluate")
        # no projection head: load_checkpoint(head=False) rejects unexpected keys, and resuming
        # contrastive training uses the resume state, which keeps the head
        save_checkpoint(self.model, card, out, include_head=False)
        return metrics
