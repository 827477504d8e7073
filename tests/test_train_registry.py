"""The training registry (methods, presets) and the one training-config schema: torch-free imports,
one validation (config_from_dict) for plain data from a form, a JSON file, the CLI and saved state."""
from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest

from backend.core.archs_meta import WIDTHS
from backend.train.__main__ import parse
from backend.train.config import TrainConfig, config_from_dict, make_config
from backend.train.registry import (
    CONTRASTIVE,
    LABELS,
    METHOD_INFO,
    METHODS,
    PRESET_INFO,
    PRESETS,
    ROBUST,
    STATUS,
    ZOO,
    datasets,
)

REPO = Path(__file__).resolve().parent.parent
FIELDS = {f.name for f in dataclasses.fields(TrainConfig)}


def test_registry_and_config_and_job_runner_import_without_torch():
    """The job runner (and an HTTP-only app) read the registry without loading torch."""
    code = ("import sys\n"
            "import backend.train.config, backend.train.registry, backend.service.jobs\n"
            "from backend.train import make_config, METHODS\n"
            "make_config('short', method=METHODS[0])\n"
            "loaded = sorted(m for m in ('torch', 'numpy', 'torchvision') if m in sys.modules)\n"
            "assert not loaded, loaded\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr


def test_every_method_has_a_loss_and_every_preset_a_valid_config():
    from backend.train import registry

    assert set(METHODS) == set(LABELS) and len(set(LABELS.values())) == len(METHODS)
    assert all(callable(registry.get(m).loss) for m in METHODS)  # each module declares its method with its loss
    assert METHODS[0] == "rsupcon"  # the listing order: the proposed method first
    assert set(CONTRASTIVE) < set(METHODS) and set(ROBUST) < set(METHODS)
    for m in METHOD_INFO.values():
        assert set(m.needs) <= FIELDS, m.name
        assert (m.attack is not None) == m.robust  # a robust method trains on crafted examples
        assert m.training_attack_steps(7) == {"pgd": 7, "fgsm": 1, None: 0}[m.attack]
    assert set(ZOO) <= set(METHODS) and len(set(ZOO)) == len(ZOO)
    assert set(PRESETS) == set(PRESET_INFO) == set(STATUS)
    for name, preset in PRESET_INFO.items():
        assert set(preset.values) <= FIELDS and preset.use and preset.label.startswith(name)
        for method in METHODS:
            cfg = make_config(name, method=method)
            assert cfg.preset == name and all(getattr(cfg, k) == v for k, v in preset.values.items())
            assert cfg.contrastive == (method in CONTRASTIVE) and cfg.robust == (method in ROBUST)
    assert make_config("short", method="ce").width in WIDTHS


def test_config_from_dict_round_trips_through_json():
    cfg = make_config("smoke", method="trades", dataset="cifar100", data="synthetic", eps=4 / 255)
    d = json.loads(json.dumps(cfg.to_dict()))
    assert config_from_dict(d) == cfg and config_from_dict(d).to_dict() == d
    # JSON has one number type: an integral float is an integer, an integer a float where a float is wanted
    c = config_from_dict({"method": "ce", "preset": "smoke", "epochs": 3.0, "lr": 1})
    assert c.epochs == 3 and isinstance(c.epochs, int) and c.lr == 1.0 and isinstance(c.lr, float)
    # None means "the preset's value"
    assert config_from_dict({"method": "ce", "preset": "short", "width": None, "epochs": None}) \
        == make_config("short", method="ce")


@pytest.mark.parametrize("d, match", [
    ({"method": "ce", "epochs": 2.5}, r"epochs must be an integer, got 2\.5"),
    ({"method": "ce", "epochs": True}, r"epochs must be an integer, got True"),
    ({"method": "ce", "lr": float("nan")}, r"lr must be a finite number, got nan"),
    ({"method": "ce", "eps": 8}, r"eps must be in \[0, 1\] \(pixel units, e\.g\. 8/255\), got 8\.0"),
    ({"method": "ce", "amp": "yes"}, r"amp must be true or false, got 'yes'"),
    ({"method": "ce", "dataset": "mnist"}, r"unknown data set 'mnist'; known: cifar10, cifar100"),
    ({"method": "ce", "width": 48}, r"width must be one of 16, 32, 64, got 48"),
    ({"method": "ce", "seed": -1}, r"seed must be a non-negative integer, got -1"),
    ({"method": "magic"}, r"unknown training method 'magic'; known: rsupcon, "),
    ({"method": "ce", "preset": "huge"}, r"unknown preset 'huge'; known: smoke, "),
    ({"method": "ce", "learning_rate": 0.1}, r"unknown config fields \['learning_rate'\]"),
    ("ce", r"must be a dict"),
])
def test_config_from_dict_names_the_bad_value(d, match):
    with pytest.raises(ValueError, match=match):
        config_from_dict(d)


def test_bounds_apply_to_the_values_a_caller_sets():
    bounds = {"subset": (64, 50000), "epochs": (1, 50)}
    assert config_from_dict({"method": "ce", "preset": "full"}, bounds=bounds).subset == 0  # the preset's "all"
    with pytest.raises(ValueError, match=r"subset must be in 64\.\.50000, got 10"):
        config_from_dict({"method": "ce", "subset": 10}, bounds=bounds)
    with pytest.raises(ValueError, match="width must be one of 16, got 32"):
        config_from_dict({"method": "ce", "width": 32}, bounds={"width": [16]})


@pytest.mark.parametrize("dataset", datasets())
def test_cli_dataset_flag(dataset, tmp_path):
    cfg, _, _ = parse(["--method", "ce", "--dataset", dataset, "--out", str(tmp_path / "m")])
    assert cfg.dataset == dataset and cfg.to_dict()["dataset"] == dataset
    assert parse(["--method", "ce", "--out", str(tmp_path / "m")])[0].dataset == "cifar10"  # the default


def test_cli_config_file_and_flags_build_the_same_config(tmp_path):
    """--config FILE (what a job writes) and the flags describe one dict; a flag overrides the file."""
    flags = ["--method", "pgd_at", "--preset", "smoke", "--epochs", "3", "--dataset", "cifar100", "--eps", "4/255",
             "--data", "synthetic", "--out", str(tmp_path / "m")]
    from_flags, _, _ = parse(flags)
    f = tmp_path / "run.json"
    f.write_text(json.dumps(from_flags.to_dict()))
    from_file, opts, _ = parse(["--config", str(f), "--out", str(tmp_path / "m")])
    assert from_file == from_flags and opts.out == tmp_path / "m"
    overridden, _, _ = parse(["--config", str(f), "--epochs", "5", "--out", str(tmp_path / "m")])
    assert overridden == dataclasses.replace(from_flags, epochs=5)


@pytest.mark.parametrize("content, message", [
    ('{"method": "ce", "lr": 0.1, "momentun": 0.9}', "unknown config fields ['momentun']"),
    ('{"method": "ce", "epochs": 0}', "epochs must be a positive integer, got 0"),
    ('["ce"]', "expected a JSON object of TrainConfig fields"),
    ('{"method": ', "run.json"),
])
def test_cli_config_file_errors(content, message, tmp_path, capsys):
    f = tmp_path / "run.json"
    f.write_text(content)
    with pytest.raises(SystemExit) as e:
        parse(["--config", str(f), "--out", str(tmp_path / "m")])
    assert e.value.code == 2 and message in capsys.readouterr().err


def test_a_method_declaration_is_checked_when_registered():
    from backend.train import registry

    def loss(nets, x_u8, y, ctx):  # never run: each declaration below is refused
        raise AssertionError

    bad = [(dict(robust=True, attack=None), "a robust method trains on crafted examples"),
           (dict(robust=True, attack="cw"), r"attack must be one of \('pgd', 'fgsm'\) or None, got 'cw'"),
           (dict(robust=False, attack=None, loss="not a function"), "loss must be callable")]
    for kw, match in bad:
        with pytest.raises(ValueError, match=match):
            registry.register(registry.Method(**{"name": "toy_bad", "label": "Bad", "title": "Bad",
                                                 "contrastive": False, "loss": loss, **kw}))
        assert "toy_bad" not in registry.names()
    with pytest.raises(ValueError, match="training method 'ce' is already registered"):
        registry.register(registry.Method("ce", "CE", "again", robust=False, contrastive=False, attack=None,
                                          loss=loss))
    with pytest.raises(ValueError, match=r"unknown training method 'toy_bad'; known: rsupcon, pgd_at"):
        registry.get("toy_bad")
