"""Importing a published model from the Service (a background task) and from the Model zoo page.

torchvision with random weights: offline, nothing downloaded. Files and code cannot be imported this way."""
from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest

from backend.service import Service
from tests.helpers import write_tiny_models
from tests.test_app_pages import MAIN, TIMEOUT, ok, run_until
from tests.test_service_contract import wait_task


def test_import_task_writes_a_listed_model_that_the_service_runs(tmp_path):
    write_tiny_models(tmp_path)
    svc = Service(tmp_path, device="cpu")
    try:
        lim = svc.limits()["imports"]
        assert lim["sources"] == ["robustbench", "torchvision", "timm"] and lim["available"]["torchvision"]
        task = svc.start_task("import_model", {"source": "torchvision", "name": "resnet18", "dataset": "cifar10"})
        st = wait_task(svc, task)
        assert st["state"] == "done", st
        assert st["result"]["model_id"] == "tv-resnet18" and st["result"]["card"]["input_size"] == 32
        assert "tv-resnet18" in [c["id"] for c in svc.list_models()]
        res = svc.predict("samples:0", ["tv-resnet18"])["results"]["tv-resnet18"]
        assert res["probs"].shape == (10,)
    finally:
        svc.close()


def test_an_offline_download_fails_with_a_plain_sentence_and_no_traceback(tmp_path, monkeypatch, caplog):
    """Issue 20, finding 5: offline, the zoo page showed "<urlopen error [Errno -2] ...>" and the server log
    two tracebacks. The download's error chain is what torchvision raises without DNS."""
    import socket
    import urllib.error

    from backend.service import model_imports

    def offline(*a, **k):
        try:
            raise socket.gaierror(-2, "Name or service not known")
        except OSError as e:
            raise urllib.error.URLError(e) from e
    monkeypatch.setattr(model_imports, "import_model", offline)
    write_tiny_models(tmp_path)
    svc = Service(tmp_path, device="cpu")
    try:
        before = sorted(p.name for p in tmp_path.iterdir())
        with caplog.at_level("WARNING"):
            st = wait_task(svc, svc.start_task("import_model", {"source": "torchvision", "name": "resnet18",
                                                                "pretrained": True}))
        assert st["state"] == "failed"
        assert st["error"].startswith("no internet connection here: the torchvision weights of 'resnet18' cannot be")
        assert "python -m backend.imports file" in st["error"] and "urlopen" not in st["error"]
        assert not any(r.exc_info for r in caplog.records)  # logged as one line, no traceback
        assert sorted(p.name for p in tmp_path.iterdir()) == before
    finally:
        svc.close()
    assert not model_imports.is_network_error(ValueError("a bad name"))


@pytest.mark.parametrize("params, match", [
    ({"source": "file", "name": "x"}, "files and code: the command line"),
    ({"source": "entrypoint", "name": "os:system"}, "files and code"),
    ({"source": "torchvision", "name": "../../etc/passwd"}, "name must be a model name"),
    ({"source": "torchvision", "name": "resnet18", "dataset": "mnist"}, "unknown dataset"),
    ({"source": "torchvision", "name": "resnet18", "pretrained": "yes"}, "pretrained must be true or false"),
    ({"source": "torchvision", "name": "resnet18", "path": "/tmp"}, "unknown import_model params"),
    ({"source": "torchvision", "name": "resnet18", "model_id": "tiny-ce"}, "exists already"),
])
def test_bad_imports_are_refused_before_any_task_starts(tmp_path, params, match):
    write_tiny_models(tmp_path)
    svc = Service(tmp_path, device="cpu")
    try:
        before = sorted(p.name for p in tmp_path.iterdir())
        with pytest.raises(ValueError, match=match):
            svc.start_task("import_model", params)
        assert sorted(p.name for p in tmp_path.iterdir()) == before
    finally:
        svc.close()


def test_zoo_page_imports_a_model(tmp_path, monkeypatch):
    write_tiny_models(tmp_path)
    nodata = tmp_path / "nodata"
    nodata.mkdir()
    monkeypatch.setenv("ROBUSTLENS_CHECKPOINTS", str(tmp_path))
    monkeypatch.setenv("RSUPCON_DATA", str(nodata))
    monkeypatch.delenv("BACKEND_URL", raising=False)
    at = AppTest.from_file(MAIN, default_timeout=TIMEOUT)
    at.switch_page("views/zoo.py")
    ok(at.run())
    assert any(h.value == "Import a model" for h in at.subheader)
    at.selectbox(key="imp_source").set_value("torchvision").run()
    at.text_input(key="imp_name").set_value("resnet18").run()
    at.selectbox(key="imp_ds").set_value("cifar10").run()
    at.button(key="imp_go").click().run()
    run_until(at, lambda a: a.session_state["zoo_import"]["state"] != "running", "the import")
    ok(at)
    assert at.session_state["zoo_import"]["state"] == "done"
    assert any("Imported **tv-resnet18**" in s.value for s in at.success)
    assert (tmp_path / "tv-resnet18" / "card.json").is_file()
    assert any("tv-resnet18" in m.value for m in at.markdown)  # its card is on the page
