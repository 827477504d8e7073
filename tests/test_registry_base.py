"""backend.core.registry.Registry, the one mechanism behind the architecture, data-set, attack, saliency
and training-method registries: checks, messages, order, and the built-ins found in their folder (a
package written here, in a temporary directory, as a new extension would be)."""
from __future__ import annotations

import importlib
import sys
import textwrap
import threading
from dataclasses import dataclass

import pytest

from backend.core.registry import Registry, discover


@dataclass(frozen=True)
class Entry:
    name: str
    order: int = 0


def test_register_get_names_and_the_messages():
    def check(e: Entry) -> None:
        if e.order < 0:
            raise ValueError("order must be >= 0")

    reg: Registry[Entry] = Registry("widget", Entry, unknown="widget kind", order=lambda e: (e.order, e.name),
                                    check=check)
    reg.register(Entry("b", 1))
    reg.register(Entry("a", 2))
    reg.register(Entry("c", 1))
    assert reg.names() == ["b", "c", "a"]  # the order key, then the name
    assert reg.get("a") == Entry("a", 2) and reg.find("zz") is None and reg.find(3) is None
    with pytest.raises(ValueError, match="widget 'a' is already registered"):
        reg.register(Entry("a", 5))
    assert reg.get("a").order == 2  # a refused register changes nothing
    reg.register(Entry("a", 0), replace=True)
    assert reg.names()[0] == "a"
    with pytest.raises(ValueError, match="order must be >= 0"):
        reg.register(Entry("d", -1))
    assert "d" not in reg.names()
    with pytest.raises(ValueError, match="must be a Entry, got str"):
        reg.register("e")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"unknown widget kind 'x'; known: a, b, c"):
        reg.get("x")
    reg.unregister("a")
    reg.unregister("never there")
    assert reg.names() == ["b", "c"]


def test_order_ties_keep_registration_order():
    reg: Registry[Entry] = Registry("widget", Entry, order=lambda e: e.order)
    for name, order in (("z", 5), ("m", 1), ("a", 5), ("b", 1)):
        reg.register(Entry(name, order))
    assert reg.names() == ["m", "b", "z", "a"]


@pytest.fixture
def plugin_root(tmp_path, monkeypatch):
    """A directory on sys.path for packages written by a test; their modules are forgotten afterwards."""
    monkeypatch.syspath_prepend(str(tmp_path))
    before = set(sys.modules)
    yield tmp_path
    for name in set(sys.modules) - before:
        del sys.modules[name]


def write(root, files: dict[str, str]) -> None:
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(textwrap.dedent(text))


HOST = """
    from dataclasses import dataclass
    from backend.core.registry import Registry

    @dataclass(frozen=True)
    class Entry:
        name: str
        order: int = 0

    REG = Registry("widget", Entry, package="{pkg}", order=lambda e: e.order)
    """
ENTRY = """
    from {host} import REG, Entry
    REG.register(Entry("{name}", {order}))
    """


def test_builtins_are_the_modules_of_their_folder_imported_on_the_first_read(plugin_root):
    write(plugin_root, {
        "wdg_host.py": HOST.format(pkg="wdg_items"),
        "wdg_items/__init__.py": '"""the built-in widgets, one module each"""\n',
        "wdg_items/beta.py": ENTRY.format(host="wdg_host", name="beta", order=2),
        "wdg_items/alpha.py": ENTRY.format(host="wdg_host", name="alpha", order=1),
        "wdg_items/_shared.py": "raise RuntimeError('a module starting with _ is not an entry')\n",
    })
    from wdg_host import REG, Entry  # type: ignore[import-not-found]

    assert "wdg_items.alpha" not in sys.modules  # nothing is imported before the first read
    assert REG.names() == ["alpha", "beta"]
    assert "wdg_items._shared" not in sys.modules
    with pytest.raises(ValueError, match="widget 'alpha' is already registered"):
        REG.register(Entry("alpha"))
    with pytest.raises(ValueError, match=r"unknown widget 'gamma'; known: alpha, beta"):
        REG.get("gamma")
    # a new module in the folder is a new entry (a process that starts now finds it; here: discover again)
    write(plugin_root, {"wdg_items/gamma.py": ENTRY.format(host="wdg_host", name="gamma", order=0)})
    importlib.invalidate_caches()
    assert discover("wdg_items") == ["wdg_items.alpha", "wdg_items.beta", "wdg_items.gamma"]
    assert REG.names() == ["gamma", "alpha", "beta"] and REG.get("gamma").order == 0
    with pytest.raises(ValueError, match="'wdg_host' is a module, not a package"):
        discover("wdg_host")


def test_a_builtin_name_is_taken_before_the_first_read_and_a_failed_import_is_retried(plugin_root):
    write(plugin_root, {
        "wdg2_host.py": HOST.format(pkg="wdg2_items"),
        "wdg2_items/__init__.py": "",
        "wdg2_items/good.py": ENTRY.format(host="wdg2_host", name="good", order=1),
        "wdg2_items/broken.py": "import a_module_that_does_not_exist\n",
    })
    from wdg2_host import REG  # type: ignore[import-not-found]

    with pytest.raises(ImportError, match="a_module_that_does_not_exist"):
        REG.names()
    write(plugin_root, {"wdg2_items/broken.py": ENTRY.format(host="wdg2_host", name="fixed", order=2)})
    importlib.invalidate_caches()
    assert REG.names() == ["good", "fixed"]  # the next read imports again

    write(plugin_root, {
        "wdg3_host.py": HOST.format(pkg="wdg3_items"),
        "wdg3_items/__init__.py": "",
        "wdg3_items/taken.py": ENTRY.format(host="wdg3_host", name="taken", order=1),
    })
    from wdg3_host import REG as REG3  # type: ignore[import-not-found]
    from wdg3_host import Entry as Entry3  # type: ignore[import-not-found]

    with pytest.raises(ValueError, match="widget 'taken' is already registered"):
        REG3.register(Entry3("taken"))  # register loads the built-ins first
    assert REG3.get("taken").order == 1


def test_a_read_from_another_thread_waits_for_the_builtins(plugin_root):
    """While one thread imports the built-ins, another thread's read must not see a half-filled
    registry: it imports too, and Python's import lock makes it wait for the module."""
    import types

    sync = types.ModuleType("wdg4_sync")
    sync.started, sync.release = threading.Event(), threading.Event()  # type: ignore[attr-defined]
    sys.modules["wdg4_sync"] = sync
    write(plugin_root, {
        "wdg4_host.py": HOST.format(pkg="wdg4_items"),
        "wdg4_items/__init__.py": "",
        "wdg4_items/slow.py": """
            import wdg4_sync
            from wdg4_host import REG, Entry
            wdg4_sync.started.set()
            wdg4_sync.release.wait(10)
            REG.register(Entry("slow"))
            """,
    })
    from wdg4_host import REG  # type: ignore[import-not-found]

    seen: dict[str, list[str]] = {}
    first = threading.Thread(target=lambda: seen.__setitem__("first", REG.names()))
    first.start()
    assert sync.started.wait(10)  # type: ignore[attr-defined]
    second = threading.Thread(target=lambda: seen.__setitem__("second", REG.names()))
    second.start()
    second.join(0.2)
    assert "second" not in seen  # still waiting for the module
    sync.release.set()  # type: ignore[attr-defined]
    first.join(10)
    second.join(10)
    assert seen == {"first": ["slow"], "second": ["slow"]}
