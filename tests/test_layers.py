"""The layer rules of docs/ARCHITECTURE.md, read from the code by scripts/layers.py."""
import importlib.util
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("layers", REPO / "scripts" / "layers.py")
layers = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(layers)


def test_no_import_goes_up_or_sideways():
    edges, bad = layers.graph()
    assert not bad, "\n".join(bad)
    assert ("backend.service", "backend.core") in edges  # the graph is really read


def _tree(tmp_path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return tmp_path


def test_checker_catches_upward_sideways_and_gate_breaking_imports(tmp_path):
    root = _tree(tmp_path, {
        "backend/__init__.py": "",
        "backend/core/__init__.py": "",
        "backend/core/models.py": "def f():\n    from backend.service import facade  # lazy, still counted\n",
        "backend/explain/__init__.py": "",
        "backend/explain/lens.py": "from ..train import loop\n",
        "backend/train/__init__.py": "",
        "backend/train/loop.py": "from backend.core import models\n",
        "backend/service/__init__.py": "",
        "backend/service/facade.py": "from backend.core.models import f\n",
        "app/__init__.py": "",
        "app/views/__init__.py": "",
        "app/views/page.py": "import backend.core.data\n",
    })
    edges, bad = layers.graph(root)
    assert edges[("backend.service", "backend.core")] == 1 and edges[("backend.train", "backend.core")] == 1
    assert len(bad) == 3, bad
    assert any("models.py (backend.core) imports backend.service, a higher layer" in b for b in bad)
    assert any("lens.py (backend.explain) imports backend.train, a sibling" in b for b in bad)
    assert any("page.py (app.views) imports backend.core: the app reaches the backend through app.session" in b
               for b in bad)


def test_architecture_doc_diagram_is_current():
    doc = (REPO / "docs" / "ARCHITECTURE.md").read_text()
    assert layers.BEGIN in doc, "docs/ARCHITECTURE.md lost its generated diagram markers"
    body = doc.split(layers.BEGIN, 1)[1].split(layers.END, 1)[0].strip()
    assert body == layers.mermaid(layers.graph()[0]), "run: python scripts/layers.py --write docs/ARCHITECTURE.md"


def test_no_import_cycle_between_modules():
    found = layers.cycles(layers.module_graph())
    assert found == [], f"import cycles: {found}"


def test_cycle_finder_sees_lazy_and_package_imports(tmp_path):
    root = _tree(tmp_path, {
        "backend/__init__.py": "",
        "backend/core/__init__.py": "",
        # the cycle the architecture registry had: a registry importing its entries lazily, entries importing it
        "backend/core/archs.py": "def builtins():\n    import backend.core.models\n",
        "backend/core/models.py": "from backend.core.archs import builtins\n",
        "backend/core/registry.py": "import importlib\n",
        # entries that import the registry, found by name at run time: no cycle
        "backend/core/architectures/__init__.py": "",
        "backend/core/architectures/toy.py": "from backend.core import registry\n",
        # `from pkg import submodule` depends on the submodule, not on the package's __init__
        "backend/attacks/__init__.py": "from backend.attacks import runner\n",
        "backend/attacks/runner.py": "from backend.attacks import spec\n",
        "backend/attacks/spec.py": "X = 1\n",
        # `from pkg import name` depends on the package's __init__
        "backend/train/__init__.py": "from backend.train.config import C\n",
        "backend/train/config.py": "from backend.train import C2\n",
    })
    graph = layers.module_graph(root)
    assert graph["backend.core.architectures.toy"] == {"backend.core.registry"}
    assert graph["backend.attacks"] == {"backend.attacks.runner"} and graph["backend.attacks.runner"] == {
        "backend.attacks.spec"}
    assert layers.cycles(graph) == [["backend.core.archs", "backend.core.models"], ["backend.train",
                                                                                   "backend.train.config"]]
    assert layers.cycles({"a": {"b"}, "b": {"c"}, "c": set()}) == []
    assert layers.cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
