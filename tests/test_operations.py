"""Each operation is declared once (backend/service/api.py) and everything else follows from it: the
Service runs its declared work, both clients and the app call it by its declared signature, the server
routes it, and no default of it is written a second time (a scan of backend/service, backend/transport
and app/). And the example of adding an operation with its page: two new files (the operation's module
and the page) and nothing else edited, exercised in-process, over HTTP and through the page."""
from __future__ import annotations

import ast
import inspect
import operator
import sys
import textwrap
from pathlib import Path

import pytest

from backend.service import Service, api
from backend.transport.client import HttpClient, InProcessClient
from tests.helpers import app_environment, serving, tiny_checkpoint_root  # noqa: F401 (fixture)

REPO = Path(__file__).resolve().parents[1]
SCANNED = ("backend/service", "backend/transport", "app")
DECLARATION = "backend/service/api.py"


def scanned_files():
    for root in SCANNED:
        for p in sorted((REPO / root).rglob("*.py")):
            if p.relative_to(REPO).as_posix() != DECLARATION:
                yield p


def same(a, b) -> bool:
    return type(a) is type(b) and a == b


def default_repeats(files=None) -> list[str]:
    """Every place in the scanned packages that writes an operation's default again (None aside: "nothing
    given" cannot drift): (1) a default on a parameter of the operation's work (a function named as the
    operation or as its impl), (2) a call of the operation that passes its default value as a literal,
    (3) `<dict>.get("<param>", <its default>)`."""
    ops = api.operations()
    out = []
    for path in files or scanned_files():
        rel = path.relative_to(REPO).as_posix() if path.is_relative_to(REPO) else path.name
        for n in ast.walk(ast.parse(path.read_text())):
            if isinstance(n, ast.FunctionDef):
                for op in ops.values():
                    names = {op.name} | ({op.impl.rsplit(".", 1)[-1]} if isinstance(op.impl, str) else set())
                    if n.name not in names:
                        continue
                    args = n.args.posonlyargs + n.args.args
                    defaults = [None] * (len(args) - len(n.args.defaults)) + list(n.args.defaults)
                    for a, d in [*zip(args, defaults), *zip(n.args.kwonlyargs, n.args.kw_defaults)]:
                        if d is not None and a.arg in op.wire_params and ast.unparse(d) != "None":
                            out.append(f"{rel}:{n.lineno} def {n.name}({a.arg}={ast.unparse(d)})")
            if not (isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)):
                continue
            if n.func.attr in ops:
                op = ops[n.func.attr]
                d, wire = op.defaults(), op.wire_params
                passed = [(wire[i], a) for i, a in enumerate(n.args) if i < len(wire)]
                passed += [(k.arg, k.value) for k in n.keywords if k.arg]
                for name, v in passed:
                    if (isinstance(v, ast.Constant) and v.value is not None and name in d
                            and same(v.value, d[name])):
                        out.append(f"{rel}:{n.lineno} {ast.unparse(n.func)}(..., {name}={v.value!r})")
            if (n.func.attr == "get" and len(n.args) == 2 and all(isinstance(a, ast.Constant) for a in n.args)
                    and n.args[1].value is not None):
                key, v = n.args[0].value, n.args[1].value
                if any(same(op.defaults().get(key, ...), v) for op in ops.values()):
                    out.append(f"{rel}:{n.lineno} {ast.unparse(n)}")
    return out


def test_no_operation_default_is_written_twice():
    assert default_repeats() == []
    # the example: explain's default method was spelled 8 times in four layers; now once
    spelled = [p for p in scanned_files() for n in ast.walk(ast.parse(p.read_text()))
               if isinstance(n, ast.Constant) and n.value == "integrated_gradients"]
    assert spelled == [] and api.get("explain").defaults()["method"] == "integrated_gradients"


def test_the_scan_finds_a_repeated_default(tmp_path):
    """The scan above is not vacuous: each kind of repeat is found."""
    bad = tmp_path / "probe.py"
    bad.write_text(textwrap.dedent('''
        def explain(image_id, model_id, method="integrated_gradients"):
            return lens.get("steps", 60)

        client.list_images("samples", limit=48)
    '''))
    found = "\n".join(default_repeats([bad]))
    assert "def explain(method='integrated_gradients')" in found
    assert "lens.get('steps', 60)" in found
    assert "client.list_images(..., source='samples')" in found and "limit=48" in found


def test_no_getattr_dispatch_between_pages_and_the_service():
    """Pages call typed methods; no class between them and the Service forwards by attribute name,
    and no app module looks an operation up by its name."""
    ops = set(api.operations())
    for path in scanned_files():
        for n in ast.walk(ast.parse(path.read_text())):
            if isinstance(n, ast.ClassDef):
                assert "__getattr__" not in {f.name for f in n.body if isinstance(f, ast.FunctionDef)}, path
            if (path.is_relative_to(REPO / "app") and isinstance(n, ast.Call) and isinstance(n.func, ast.Name)
                    and n.func.id in ("getattr", "call") and any(
                        isinstance(a, ast.Constant) and a.value in ops for a in n.args)):
                raise AssertionError(f"{path}:{n.lineno} calls an operation by its name: {ast.unparse(n)}")


@pytest.fixture(scope="module")
def service(tiny_checkpoint_root, tmp_path_factory):  # noqa: F811
    s = Service(tiny_checkpoint_root, jobs_root=tmp_path_factory.mktemp("jobs"))
    yield s
    s.close()


def test_every_operation_is_done_by_its_declared_work_with_its_declared_parameters(service):
    for op in api.operations().values():
        work = op.impl if callable(op.impl) else operator.attrgetter(op.impl)(service)
        params = inspect.signature(work).parameters
        expected = list(op.wire_params) + (list(api.HOOKS) if op.task else [])
        names = [p for p in params if p != "service"]
        assert names[:len(expected)] == expected, op.name
        assert all(params[p].default is not inspect.Parameter.empty for p in names[len(expected):]), op.name
        # the defaults are the declaration's: the work has none of its own (None aside)
        assert all(params[p].default in (inspect.Parameter.empty, None) for p in op.wire_params), op.name
        for cls in (Service, InProcessClient, HttpClient):  # each is the declared method itself
            assert inspect.signature(getattr(cls, op.name)) == inspect.signature(getattr(api.Api, op.name))


def test_a_call_that_does_not_fit_the_declaration_is_refused_before_it_is_sent(service):
    with pytest.raises(TypeError):
        InProcessClient(service).predict()  # image_id is required
    with pytest.raises(ValueError, match="unknown predict params \\['k'\\]"):
        api.get("predict").from_params({"image_id": "samples:0", "k": 1})
    with pytest.raises(ValueError, match="unknown operation 'nope'"):
        api.get("nope")


# ---- the example: an operation and its page, two new files -------------------------------------
OPERATION = '''
"""Brightness: the image's mean brightness and each model's top class (an example operation)."""
from backend.service.api import INTERACTIVE, Api, ImageId, Ids, operation


def work(service, image_id, model_ids, top):
    pixels = service.get_image(image_id)["pixels"]
    pred = service.predict(image_id, model_ids, top)["results"]
    return {"brightness": float(pixels.mean()) / 255.0,
            "top": {m: [t["class_name"] for t in r["top"]] for m, r in pred.items()}}


@Api.add
@operation("POST", "/brightness", cost=INTERACTIVE, impl=work)
def brightness(self, image_id: ImageId, model_ids: Ids | None = None, top: int = 2) -> dict:
    """The image's mean brightness in [0, 1] and each model's `top` classes."""
    raise NotImplementedError
'''

PAGE = '''
import streamlit as st

import brightness_op  # noqa: F401 (declares the operation)
from app.session.client import backend

out = backend().brightness("samples:3")
if out is not None:
    st.metric("Brightness", f"{out['brightness']:.4f}")
    for m, top in out["top"].items():
        st.write(f"{m}: {', '.join(top)}")
'''


@pytest.fixture
def example(tmp_path, monkeypatch):
    """The two files of the example, importable; the operation taken back afterwards."""
    (tmp_path / "brightness_op.py").write_text(OPERATION)
    (tmp_path / "brightness_page.py").write_text(PAGE)
    monkeypatch.syspath_prepend(str(tmp_path))
    import brightness_op  # noqa: F401

    yield tmp_path
    api.Api.remove("brightness")
    sys.modules.pop("brightness_op", None)


def test_an_operation_and_its_page_added_in_two_files(example, service, tiny_checkpoint_root, tmp_path):  # noqa: F811
    from fastapi.testclient import TestClient
    from streamlit.testing.v1 import AppTest

    from backend.transport.server import create_app

    # in-process: the Service runs the work with the declared default (top=2)
    here = InProcessClient(service).brightness("samples:3", ["tiny-ce"])
    assert 0 < here["brightness"] < 1 and len(here["top"]["tiny-ce"]) == 2
    assert "brightness" not in api.task_kinds()
    # over HTTP: a route with a typed body, in the OpenAPI schema; the same answer
    app = create_app(service)
    remote = HttpClient("http://testserver", http=TestClient(app, raise_server_exceptions=False))
    assert remote.brightness("samples:3", ["tiny-ce"]) == here
    schema = remote._http.get("/openapi.json").json()
    body = schema["paths"]["/brightness"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    props = schema["components"]["schemas"][body["$ref"].split("/")[-1]]["properties"]
    assert set(props) == {"image_id", "model_ids", "top"} and props["top"]["default"] == 2
    with pytest.raises(ValueError, match="topk must be an integer"):
        remote.brightness("samples:3", top=0)

    # the page, through the app's client: in-process, then against a real server over HTTP
    def page_text(**env) -> list[str]:
        with app_environment(tiny_checkpoint_root, tmp_path / "nodata", ROBUSTLENS_WARM_UP="0"), \
                pytest.MonkeyPatch.context() as mp:
            for k, v in env.items():
                mp.setenv(k, v)
            at = AppTest.from_file(str(example / "brightness_page.py"), default_timeout=60).run()
            assert not at.exception, at.exception
            return [at.metric[0].value] + [m.value for m in at.markdown]

    (tmp_path / "nodata").mkdir()
    expected = [f"{here['brightness']:.4f}"] + [f"{m}: {', '.join(t)}" for m, t in
                                                  InProcessClient(service).brightness("samples:3")["top"].items()]
    assert page_text() == expected
    with serving(create_app(service)) as url:
        assert page_text(BACKEND_URL=url) == expected
