"""Importing published and own models as checkpoints (backend.imports, backend.core.adapters).

Offline: every network has random weights; the RobustBench test goes through robustbench's real
load_model reading a real file from its model folder (the extra: requirements-extras.txt)."""
from __future__ import annotations

import importlib.util
import json

import pytest
import torch
import torch.nn as nn

from backend.core import adapters
from backend.core.archs import check_model
from backend.core.checkpoints import load_checkpoint, new_card, save_checkpoint, sha256_file
from backend.core.datasets import CIFAR10
from backend.core.models import build_model
from backend.imports.__main__ import main as cli
from backend.imports.sources import default_id, import_model

HAS_RB = importlib.util.find_spec("robustbench") is not None
HAS_TIMM = importlib.util.find_spec("timm") is not None
needs_rb = pytest.mark.skipif(not HAS_RB, reason="robustbench extra not installed (requirements-extras.txt)")
needs_timm = pytest.mark.skipif(not HAS_TIMM, reason="timm extra not installed (requirements-extras.txt)")


def _x(size: int, n: int = 2, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def _contract_holds(model: nn.Module, size: int, num_classes: int) -> None:
    check_model(model)
    x = _x(size)
    with torch.no_grad():
        f, z = model.features(x), model.logits(x)
        assert f.shape == (2, model.feature_dim) and z.shape == (2, num_classes)
        torch.testing.assert_close(model.classifier(f), z, atol=1e-4, rtol=1e-4)
    maps = []
    h = model.cam_layer.register_forward_hook(lambda m, i, o: maps.append(o))
    with torch.no_grad():
        model(x)
    h.remove()
    assert maps and maps[-1].dim() == 4 and maps[-1].shape[-1] > 1
    names = [n for n, _ in model.stages()]
    assert len(names) >= 2 and len(set(names)) == len(names)


def test_adapter_wraps_a_plain_classifier_and_normalises_inside():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                        nn.Linear(4, 5))
    m = adapters.ContractAdapter(net, 5, 16, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25)).eval()
    _contract_holds(m, 16, 5)
    x = _x(16)
    with torch.no_grad():
        torch.testing.assert_close(m(x), net((x - 0.5) / 0.25))
    assert m.cam_layer is net[1] and [n for n, _ in m.stages()] == ["4", "0"]
    assert set(m.state_dict()) == {"normalize.mean", "normalize.std", "net.0.weight", "net.0.bias",
                                   "net.4.weight", "net.4.bias"}


def test_adapter_refuses_what_the_contract_cannot_hold():
    tail = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 5), nn.Tanh())
    with pytest.raises(ValueError, match="something runs after the classifier"):
        adapters.ContractAdapter(tail, 5, 16)
    with pytest.raises(ValueError, match="no nn.Linear with 7 outputs"):
        adapters.ContractAdapter(tail[:4], 7, 16)
    flat = nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 5))
    with pytest.raises(ValueError, match="no 4-D feature map"):
        adapters.ContractAdapter(flat, 5, 16)
    with pytest.raises(ValueError, match="both mean and std"):
        adapters.ContractAdapter(tail[:4], 5, 16, mean=(0.5, 0.5, 0.5))


def test_torchvision_resnet50_imports_at_224_and_reloads_the_same(tmp_path):
    torch.manual_seed(0)
    out = import_model("torchvision", "resnet50", root=tmp_path)
    card = json.loads((out / "card.json").read_text())
    assert out.name == "tv-resnet50" and card["arch"] == "torchvision" and card["input_size"] == 224
    assert card["dataset"] == "imagenet" and len(card["classes"]) == 1000 and card["classes"][0] == "tench"
    assert card["arch_args"]["mean"] == list(adapters.IMAGENET_MEAN) and card["method"] == "imported"
    prov = card["provenance"]
    assert prov["source"] == "torchvision" and prov["weights"] is None and prov["version"]
    assert (out / ".gitignore").read_text().strip().endswith("*")
    loaded = load_checkpoint(out).model
    _contract_holds(loaded, 224, 1000)
    assert type(loaded.cam_layer).__name__ == "Sequential" and loaded.stages()[0][0] == "fc"


def test_torchvision_small_model_at_64px_matches_its_source_net(tmp_path):
    import torchvision

    torch.manual_seed(0)
    out = import_model("torchvision", "resnet18", dataset="cifar10", input_size=64, root=tmp_path, model_id="tv18")
    loaded = load_checkpoint(out).model
    assert loaded.input_size == 64 and loaded.num_classes == 10
    ref = torchvision.models.resnet18(num_classes=10).eval()
    ref.load_state_dict({k[len("net."):]: v for k, v in loaded.state_dict().items() if k.startswith("net.")})
    x = _x(64)
    mean = torch.tensor(adapters.IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(adapters.IMAGENET_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), ref((x - mean) / std), atol=1e-5, rtol=1e-5)


@needs_timm
def test_timm_model_with_a_cifar100_head(tmp_path):
    torch.manual_seed(0)
    out = import_model("timm", "resnet18", dataset="cifar100", root=tmp_path)
    card = json.loads((out / "card.json").read_text())
    assert card["arch"] == "timm" and card["num_classes"] == 100 and card["input_size"] == 32
    assert card["classes"][:2] == ["apple", "aquarium_fish"] and card["provenance"]["source"] == "timm"
    _contract_holds(load_checkpoint(out).model, 32, 100)


@needs_rb
def test_robustbench_model_through_its_own_load_model_reading_a_local_file(tmp_path):
    torch.manual_seed(0)
    net = adapters.robustbench_net("Wong2020Fast", "cifar10", "Linf")
    folder = tmp_path / "rb" / "cifar10" / "Linf"
    folder.mkdir(parents=True)
    torch.save(net.state_dict(), folder / "Wong2020Fast.pt")  # where robustbench looks: no download
    code = cli(["robustbench", "Wong2020Fast", "--dataset", "cifar10", "--threat-model", "Linf",
                "--model-dir", str(tmp_path / "rb"), "--root", str(tmp_path / "ck")])
    assert code == 0
    out = tmp_path / "ck" / "rb-wong2020fast"
    card = json.loads((out / "card.json").read_text())
    assert card["arch"] == "robustbench" and card["arch_args"]["name"] == "Wong2020Fast"
    assert card["provenance"]["sha256"] == sha256_file(folder / "Wong2020Fast.pt")
    assert card["provenance"]["version"] and card["classes"] == list(CIFAR10.classes)
    loaded = load_checkpoint(out).model
    _contract_holds(loaded, 32, 10)
    _, _, _, load_model = adapters.robustbench_zoo()
    ref = load_model(model_name="Wong2020Fast", model_dir=str(tmp_path / "rb"), dataset="cifar10",
                     threat_model="Linf").eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(_x(32)), ref(_x(32)), atol=1e-5, rtol=1e-5)


@needs_rb
def test_robustbench_unknown_name_is_a_clear_error_and_writes_nothing(tmp_path, capsys):
    code = cli(["robustbench", "NoSuchModel2099", "--root", str(tmp_path / "ck")])
    assert code == 2 and "no model 'NoSuchModel2099'" in capsys.readouterr().err
    assert not (tmp_path / "ck").exists()


def test_own_weights_file_pt_and_safetensors(tmp_path):
    torch.manual_seed(3)
    ours = build_model("resnet18", width=16, num_classes=10).eval()
    torch.save({"state_dict": {f"module.{k}": v for k, v in ours.state_dict().items()}}, tmp_path / "mine.pt")
    out = import_model("file", str(tmp_path / "mine.pt"), arch="resnet18", arch_args={"width": 16},
                       root=tmp_path / "ck")
    card = json.loads((out / "card.json").read_text())
    assert out.name == "own-mine" and card["provenance"]["sha256"] == sha256_file(tmp_path / "mine.pt")
    with torch.no_grad():
        torch.testing.assert_close(load_checkpoint(out).model(_x(32)), ours(_x(32)))
    # a safetensors file made by our own save
    save_checkpoint(ours, new_card("src", "ce", "resnet18", 16, list(CIFAR10.classes)), tmp_path / "src",
                    dtype=torch.float32)
    out2 = import_model("file", str(tmp_path / "src" / "model.safetensors"), arch_args={"width": 16},
                        root=tmp_path / "ck", model_id="own-st")
    with torch.no_grad():
        torch.testing.assert_close(load_checkpoint(out2).model(_x(32)), ours(_x(32)))


class _NotTensors:  # a pickled object: torch.load(weights_only=True) must refuse it
    pass


def test_pickled_objects_and_wrong_shapes_are_refused_and_nothing_is_written(tmp_path):
    torch.save({"w": _NotTensors()}, tmp_path / "evil.pt")
    with pytest.raises(ValueError, match="tensors-only"):
        import_model("file", str(tmp_path / "evil.pt"), root=tmp_path / "ck")
    torch.save(build_model("resnet18", width=32, num_classes=10).state_dict(), tmp_path / "w32.pt")
    with pytest.raises(ValueError, match="does not fit the architecture"):
        import_model("file", str(tmp_path / "w32.pt"), arch_args={"width": 16}, root=tmp_path / "ck")
    with pytest.raises(ValueError, match="unknown source"):
        import_model("hub", "x", root=tmp_path / "ck")
    assert not (tmp_path / "ck").exists() or not any((tmp_path / "ck").iterdir())


def test_entrypoint_runs_only_when_trusted(tmp_path, monkeypatch):
    monkeypatch.delenv(adapters.TRUST_ENV, raising=False)
    with pytest.raises(ValueError, match="not trusted"):
        import_model("entrypoint", "tests.toy_entry:build", root=tmp_path / "ck")
    assert not (tmp_path / "ck").exists()
    monkeypatch.setenv(adapters.TRUST_ENV, "tests.toy_entry:build")
    out = import_model("entrypoint", "tests.toy_entry:build", kwargs={"channels": 6}, root=tmp_path / "ck")
    model = load_checkpoint(out).model
    _contract_holds(model, 32, 10)
    assert model.feature_dim == 6
    monkeypatch.setenv(adapters.TRUST_ENV, "")  # a card cannot choose code: loading needs the trust too
    with pytest.raises(Exception, match="not trusted"):
        load_checkpoint(out)


def test_existing_id_is_kept_unless_overwrite(tmp_path):
    out = import_model("torchvision", "resnet18", dataset="cifar10", root=tmp_path, model_id="tv-a")
    before = sha256_file(out / "model.safetensors")
    with pytest.raises(ValueError, match="already exists"):
        import_model("torchvision", "resnet18", dataset="cifar10", root=tmp_path, model_id="tv-a")
    assert sha256_file(out / "model.safetensors") == before
    assert default_id("robustbench", "Carmon2019Unlabeled") == "rb-carmon2019unlabeled"


def test_arch_registry_knows_the_published_families():
    from backend.core import archs

    assert {"resnet18", "torchvision", "timm", "robustbench", "entrypoint"} <= set(archs.names())
    with pytest.raises(ValueError, match="dataset must be one of"):
        archs.full_args("robustbench", {"dataset": "mnist"})
