"""Training: every method end to end on a tiny synthetic task, resume == uninterrupted, the RSupCon
attack, the schedule, the CLI's argument checks and SIGTERM handling."""
from __future__ import annotations

import contextlib
import json
import math
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from backend.core.checkpoints import load_checkpoint, read_card
from backend.core.models import build_model
from backend.train import RunOptions, make_config, train
from backend.train import state as st
from backend.train.__main__ import parse
from backend.train.loop import lr_at
from backend.train.losses import rsupcon_attack_loss
from backend.train.registry import METHODS
from backend.train.steps import Cancelled, Nets, StepContext, TrainNet, rsupcon_attack

REPO = Path(__file__).resolve().parent.parent
TINY = dict(data="synthetic", subset=16, batch_size=8, val_n=8, val_robust_n=4, ncm_n=16, attack_steps=1,
            probe_epochs=1, probe_batch_size=16)


def tiny_cfg(method, **kw):
    return make_config("smoke", method=method, **{**TINY, **kw})


def events(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


@pytest.mark.parametrize("method", METHODS)
def test_each_method_writes_a_loadable_checkpoint_with_a_complete_card(method, tmp_path):
    out = tmp_path / "ckpts" / f"tiny-{method}"
    opts = RunOptions(out=out, state_dir=tmp_path / "state", events=tmp_path / "ev.jsonl", progress_bar=False)
    assert train(tiny_cfg(method), opts) == out
    loaded = load_checkpoint(out)
    assert loaded.model(torch.rand(2, 3, 32, 32)).shape == (2, 10)
    card = loaded.card
    assert card["method"] == method and card["width"] == 16 and card["status"] == "smoke"
    assert card["data_variant"] == "synthetic" and card["train_config"]["attack_steps"] == 1
    assert 0 <= card["metrics"]["val_clean"] <= 1 and card["metrics"]["n_val"] == 8
    assert card["metrics"]["val_robust"] is not None and card["metrics"]["n_val_robust"] == 4
    tr = card["training"]
    assert tr["epochs"] == 1 and tr["time_s"] > 0 and tr["hardware"] and tr["device"] == "cpu"
    assert tr["attack_steps"] == {"ce": 0, "supcon": 0, "fgsm_rs": 1}.get(method, 1)
    ev = events(tmp_path / "ev.jsonl")
    types = [e["type"] for e in ev]
    assert types[0] == "start" and types[-1] == "done" and "progress" in types and "epoch" in types
    assert ("probe" in types) == (method in ("supcon", "rsupcon"))
    assert ev[-1]["checkpoint"] == str(out)
    prog = next(e for e in ev if e["type"] == "progress")
    assert {"epoch", "epochs", "step", "steps_per_epoch", "loss", "lr", "images_per_s", "eta_s"} <= set(prog)


class StopAfter:
    """should_stop() that turns True from its n-th call on (lands anywhere: step boundary, inside an
    attack, validation, probe)."""

    def __init__(self, n):
        self.n, self.calls = n, 0

    def __call__(self):
        self.calls += 1
        return self.calls >= self.n


def final_weights(state_dir):
    tensors, meta = st.load_state(Path(state_dir))
    assert meta["phase"] == "done"
    return {k: v for k, v in tensors.items() if k.startswith("model/")}


@pytest.mark.parametrize("method,cuts", [("rsupcon", (4, 11)), ("trades", (3,))])
def test_resume_gives_the_same_model_as_an_uninterrupted_run(method, cuts, tmp_path):
    cfg = tiny_cfg(method, epochs=2)
    ref = RunOptions(out=tmp_path / "a" / "m", state_dir=tmp_path / "sa", progress_bar=False)
    train(cfg, ref)
    want = final_weights(tmp_path / "sa")
    # save_every_min ~ 0: a mid-epoch state save after every step as well
    opts = RunOptions(out=tmp_path / "b" / "m", state_dir=tmp_path / "sb", events=tmp_path / "ev.jsonl",
                      progress_bar=False, save_every_min=1e-9)
    for n in cuts:  # interrupt, then resume from wherever it stopped, possibly more than once
        with pytest.raises(Cancelled):
            train(cfg, RunOptions(**{**vars(opts), "resume": True}), should_stop=StopAfter(n))
        assert not (tmp_path / "b" / "m").exists()
    train(cfg, RunOptions(**{**vars(opts), "resume": True}))
    got = final_weights(tmp_path / "sb")
    assert got.keys() == want.keys()
    for k in want:
        assert torch.equal(got[k], want[k]), k
    ev = events(tmp_path / "ev.jsonl")
    assert [e.get("cancelled") for e in ev if e["type"] == "error"] == [True] * len(cuts)
    assert read_card(tmp_path / "b" / "m")["metrics"] == read_card(tmp_path / "a" / "m")["metrics"]


def test_resume_with_another_config_is_refused(tmp_path):
    opts = RunOptions(out=tmp_path / "m", state_dir=tmp_path / "s", progress_bar=False)
    train(tiny_cfg("ce"), opts)
    with pytest.raises(ValueError, match="lr"):
        train(tiny_cfg("ce", lr=0.05), RunOptions(**{**vars(opts), "resume": True}))


def test_rsupcon_attack_ascends_its_loss_and_stays_in_the_ball():
    torch.manual_seed(0)
    model = build_model("resnet18", 16, 10, head=True)
    core = TrainNet(model)
    nets = Nets(core, core, core)
    cfg = make_config("smoke", method="rsupcon", attack_steps=5)
    ctx = StepContext(cfg, torch.Generator().manual_seed(0), torch.Generator().manual_seed(1),
                      contextlib.nullcontext, lambda: False)
    g = torch.Generator().manual_seed(2)
    xt, xs, xb = (torch.rand(8, 3, 32, 32, generator=g) for _ in range(3))
    y = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3])
    model.train()
    x_adv = rsupcon_attack(nets, xt, xs, xb, y, ctx)
    assert model.training  # the attack ran in eval mode and restored train mode
    x = torch.cat([xt, xs])
    assert (x_adv - x).abs().max() <= cfg.eps + 1e-6
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    model.eval()
    with torch.no_grad():
        z_clean = core(torch.cat([xt, xs, xb]), "proj").view(3, 8, -1)
        before = rsupcon_attack_loss(core(x, "proj").view(2, 8, -1), z_clean, y).mean()
        after = rsupcon_attack_loss(core(x_adv, "proj").view(2, 8, -1), z_clean, y).mean()
    assert after > before


def test_lr_schedules():
    cfg = make_config("smoke", method="ce", epochs=4, lr=0.1)
    assert [round(lr_at(cfg, s, 10), 6) for s in (0, 19, 20, 29, 30, 39)] == [0.1, 0.1, 0.01, 0.01, 0.001, 0.001]
    warm = make_config("smoke", method="ce", epochs=4, lr=0.1, warmup_epochs=1.0)
    assert lr_at(warm, 0, 10) == pytest.approx(0.01) and lr_at(warm, 10, 10) == pytest.approx(0.1)
    cos = make_config("smoke", method="ce", epochs=4, lr=0.1, schedule="cosine")
    assert lr_at(cos, 0, 10) == pytest.approx(0.1) and lr_at(cos, 20, 10) == pytest.approx(0.05)
    assert lr_at(cos, 39, 10) < 0.001


@pytest.mark.parametrize("argv,message", [
    (["--method", "magic"], "invalid choice: 'magic'"),
    (["--method", "ce", "--epochs", "0"], "epochs must be a positive integer, got 0"),
    (["--method", "ce", "--width", "20"], "invalid choice: 20"),
    (["--method", "ce", "--lr", "-1"], "lr must be > 0, got -1.0"),
    (["--method", "ce", "--lr", "inf"], "lr must be a finite number, got inf"),
    (["--method", "ce", "--batch-size", "x"], "expected an integer, got 'x'"),
    (["--method", "ce", "--val-n", "10", "--val-robust-n", "20"], "val_robust_n cannot exceed val_n=10, got 20"),
    (["--method", "ce", "--subset", "1"], "subset must be an integer >= 2 (or 0 for all), got 1"),
    (["--method", "ce", "--dataset", "mnist"], "invalid choice: 'mnist'"),
    (["--preset", "smoke"], "--method is required"),
])
def test_cli_rejects_bad_arguments(argv, message, capsys, tmp_path):
    with pytest.raises(SystemExit) as e:
        parse(argv + ["--out", str(tmp_path / "m")])
    assert e.value.code == 2
    assert message in capsys.readouterr().err


def test_cli_rejects_a_bad_model_id(capsys):
    with pytest.raises(SystemExit):
        parse(["--method", "ce", "--out", "checkpoints/bad name!"])
    assert "invalid model id" in capsys.readouterr().err


def test_cli_flags_override_the_preset(tmp_path):
    cfg, opts, _ = parse(["--method", "pgd_at", "--preset", "short", "--epochs", "7", "--attack-steps", "2",
                          "--data", "synthetic", "--out", str(tmp_path / "m"), "--resume"])
    assert (cfg.preset, cfg.width, cfg.epochs, cfg.attack_steps, cfg.subset) == ("short", 16, 7, 2, 2000)
    assert opts.resume and opts.out == tmp_path / "m"


def test_sigterm_stops_without_a_final_checkpoint(tmp_path):
    out, ev = tmp_path / "ckpts" / "sig", tmp_path / "ev.jsonl"
    cmd = [sys.executable, "-m", "backend.train", "--method", "ce", "--preset", "smoke", "--data", "synthetic",
           "--epochs", "500", "--out", str(out), "--state-dir", str(tmp_path / "state"), "--events", str(ev),
           "--no-progress", "--threads", "1"]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not (ev.exists() and '"progress"' in ev.read_text()):
            assert proc.poll() is None, proc.communicate()[1]
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM, err
    last = events(ev)[-1]
    assert last["type"] == "error" and last["cancelled"] is True
    assert not out.exists() and not [p for p in out.parent.iterdir()] if out.parent.exists() else True
    assert (tmp_path / "state" / "state.json").is_file()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("method", METHODS)
def test_cuda_smoke_bf16_channels_last(method, tmp_path):
    out = tmp_path / f"gpu-{method}"
    train(tiny_cfg(method), RunOptions(out=out, state_dir=tmp_path / "s", device="cuda", progress_bar=False))
    card = load_checkpoint(out).card
    assert card["training"]["device"] == "cuda" and card["metrics"]["val_clean"] is not None


def test_adversarial_probe_option(tmp_path):
    out = tmp_path / "adv-probe"
    train(tiny_cfg("supcon", adv_probe=True), RunOptions(out=out, state_dir=tmp_path / "s", progress_bar=False))
    card = load_checkpoint(out).card
    assert card["train_config"]["adv_probe"] is True and card["metrics"]["val_robust"] is not None


def test_linear_probe_fits_raw_feature_classifier():
    """The probe (standardised features, folded into fc) gives a plain Linear on raw features that
    fits an easy task, and leaves the encoder untouched."""
    from backend.train.inputs import synthetic_task
    from backend.train.probe import linear_probe

    torch.manual_seed(0)
    model = build_model("resnet18", 16, 10, head=True)
    with torch.no_grad():  # uncentred, large features: what diverged with a plain lr-1.0 probe
        model.train()
        model(torch.rand(32, 3, 32, 32))
    core = TrainNet(model)
    nets = Nets(core, core, core)
    x, y = synthetic_task(128, seed=3)
    cfg = make_config("smoke", method="supcon", probe_epochs=8, probe_batch_size=32)
    ctx = StepContext(cfg, torch.Generator(), torch.Generator(), contextlib.nullcontext, lambda: False)
    encoder = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("fc.")}
    losses = []
    linear_probe(nets, x, y, ctx, on_epoch=lambda e, loss: losses.append(loss))
    assert losses[-1] < losses[0] and all(math.isfinite(v) for v in losses)
    model.eval()
    with torch.no_grad():
        acc = (model(x.float() / 255).argmax(1) == y).float().mean().item()
    assert acc > 0.5
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in encoder.items())


def test_training_and_evaluation_import_no_app_only_packages(tmp_path):
    """The GPU machine has torch and torchvision only: a training run and a PGD evaluation must not
    import captum, umap, streamlit or torchattacks (AutoAttack loads torchattacks on request only)."""
    code = (
        "import sys\n"
        "from backend.train.__main__ import main as train\n"
        "from backend.eval.evaluate import main as evaluate\n"
        f"out = {str(tmp_path / 'm')!r}\n"
        "rc = train(['--method', 'rsupcon', '--preset', 'smoke', '--data', 'synthetic', '--out', out,\n"
        f"            '--state-dir', {str(tmp_path / 's')!r}, '--no-progress', '--threads', '1'])\n"
        "assert rc == 0, rc\n"
        "assert evaluate(['--checkpoint', out, '--data', 'synthetic', '--n-pgd', '8', '--threads', '1']) == 0\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('captum', 'umap', 'streamlit', 'torchattacks'))\n"
        "print('IMPORTED', bad)\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "IMPORTED []" in r.stdout, r.stdout[-500:]


def test_hardware_names_the_cpu_its_vector_instructions_and_native_bf16(monkeypatch, tmp_path):
    """A card's hardware says which instructions torch runs on (AVX2 and AVX-512 CPUs differ several-fold) and
    whether bf16 is native: bf16 training was 16x slower than fp32 on an AVX2 CPU without it."""
    from backend.train import events

    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nmodel name\t: Test CPU 9000\nflags\t\t: fpu avx2 avx512f avx512_bf16\n\n"
                    "processor\t: 1\nmodel name\t: Other\nflags\t\t: fpu\n")
    real_path = events.Path
    monkeypatch.setattr(events, "Path", lambda p: info if p == "/proc/cpuinfo" else real_path(p))
    monkeypatch.setattr(events, "usable_cores", lambda: 2)
    isa = torch.backends.cpu.get_cpu_capability()
    n = torch.get_num_threads()
    want = f"Test CPU 9000, {isa}+bf16 (2 cores, {n} thread{'s' if n != 1 else ''})"
    assert events.hardware(torch.device("cpu")) == want
    info.write_text("model name\t: Test CPU 9000\nflags\t\t: fpu avx2\n")
    assert events.hardware(torch.device("cpu"), world=2).startswith(f"Test CPU 9000, {isa} (2 cores, ")
    assert events.hardware(torch.device("cpu"), world=2).endswith(", 2 processes)")
