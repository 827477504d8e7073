"""Every extension point is one backend.core.registry.Registry whose built-ins are the modules of its own
folder, found on first use; adding an entry is adding one module there (docs/ARCHITECTURE.md,
"Extension points"). Shown here end to end for a training method written into a temporary folder."""
from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import backend.train.methods as train_methods_pkg
from backend.attacks import registry as attack_registry
from backend.core import archs, datasets
from backend.core.checkpoints import load_checkpoint
from backend.core.registry import Registry, discover
from backend.explain import saliency_registry
from backend.train import RunOptions, make_config, train
from backend.train import registry as train_registry

REPO = Path(__file__).resolve().parent.parent
POINTS = {  # extension point: (its registry, its folder of built-ins, a built-in entry)
    "architecture": (archs.REGISTRY, "backend.core.architectures", "resnet18"),
    "dataset": (datasets.REGISTRY, "backend.core.dataset_specs", "cifar10"),
    "attack": (attack_registry.REGISTRY, "backend.attacks.methods", "pgd"),
    "saliency method": (saliency_registry.REGISTRY, "backend.explain.saliency_methods", "gradcam"),
    "training method": (train_registry.REGISTRY, "backend.train.methods", "rsupcon"),
}


@pytest.mark.parametrize("kind", POINTS)
def test_each_extension_point_is_a_registry_over_its_own_folder(kind):
    reg, package, builtin = POINTS[kind]
    assert isinstance(reg, Registry) and reg.kind.startswith(kind.split()[0]) and reg.package == package
    folder = Path(REPO, *package.split("."))
    init = ast.parse((folder / "__init__.py").read_text())
    assert not [n for n in ast.walk(init) if isinstance(n, (ast.Import, ast.ImportFrom, ast.Call))], \
        f"{folder}/__init__.py imports its modules itself"
    entries = [p.stem for p in folder.glob("*.py") if not p.stem.startswith("_")]
    assert len(entries) >= 1 and discover(package) == [f"{package}.{m}" for m in sorted(entries)]
    assert reg.get(builtin).name == builtin and builtin in reg.names()
    with pytest.raises(ValueError, match=rf"unknown {reg.unknown} 'nope'; known: .*{builtin}"):
        reg.get("nope")


def test_the_entry_modules_load_on_first_use_only():
    """Importing a registry's package imports none of its entry modules; the first read imports them all."""
    code = textwrap.dedent("""
        import sys
        import backend.attacks, backend.core.archs, backend.core.datasets, backend.explain.saliency
        import backend.train.registry
        folders = ("backend.attacks.methods.", "backend.core.architectures.", "backend.core.dataset_specs.",
                   "backend.explain.saliency_methods.", "backend.train.methods.")
        early = sorted(m for m in sys.modules if m.startswith(folders))
        assert not early, early
        from backend.attacks import registry
        assert "pgd" in registry.names() and "backend.attacks.methods.cw" in sys.modules
        assert "backend.core.architectures.fastnet" not in sys.modules
        from backend.train import registry as train_registry
        assert train_registry.names()[0] == "rsupcon" and "backend.train.methods.trades" in sys.modules
        """)
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr


TOY_METHOD = '''
    """A toy training method: cross-entropy on the images as they come (no views, no attack)."""
    from backend.train.registry import CE_FIELDS, Method, register


    def loss(nets, x_u8, y, ctx):
        from backend.train.steps import ce_logits

        return ce_logits(nets, x_u8.float() / 255, y, ctx)


    METHOD = register(Method("toy_plain", "Toy", "Toy plain cross-entropy", robust=False, contrastive=False,
                             attack=None, needs=CE_FIELDS, loss=loss, order=99))
    '''


@pytest.fixture
def toy_method_module(tmp_path, monkeypatch):
    """toy_plain.py written into a temporary folder that is made part of backend/train/methods/ (as if
    the file had been added there), then found the way the built-ins are."""
    folder = tmp_path / "more_methods"
    folder.mkdir()
    (folder / "toy_plain.py").write_text(textwrap.dedent(TOY_METHOD))
    monkeypatch.setattr(train_methods_pkg, "__path__", [*train_methods_pkg.__path__, str(folder)])
    yield "backend.train.methods.toy_plain"
    train_registry.unregister("toy_plain")
    sys.modules.pop("backend.train.methods.toy_plain", None)


def test_a_training_method_added_as_one_module_is_found_validated_and_trained(toy_method_module, tmp_path):
    with pytest.raises(ValueError, match="unknown training method 'toy_plain'; known: rsupcon"):
        make_config("smoke", method="toy_plain")
    assert toy_method_module in discover("backend.train.methods")  # what the first read of a new process does
    assert train_registry.names()[-1] == "toy_plain" and train_registry.LABELS["toy_plain"] == "Toy"
    assert "toy_plain" in train_registry.METHODS and "toy_plain" not in train_registry.ROBUST
    cfg = make_config("smoke", method="toy_plain", data="synthetic", subset=16, batch_size=8, val_n=8,
                      val_robust_n=4, attack_steps=1)
    assert cfg.robust is False and cfg.contrastive is False
    out = tmp_path / "ckpts" / "tiny-toy"
    assert train(cfg, RunOptions(out=out, state_dir=tmp_path / "state", progress_bar=False)) == out
    loaded = load_checkpoint(out)
    assert loaded.card["method"] == "toy_plain" and loaded.card["training"]["attack_steps"] == 0
    assert loaded.model(torch.rand(2, 3, 32, 32)).shape == (2, 10)
    with pytest.raises(ValueError, match="training method 'toy_plain' is already registered"):
        train_registry.register(train_registry.get("toy_plain"))
