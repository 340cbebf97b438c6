"""What every request passes through: the metric labels come from the app's own route table
(every route counted as itself, anything else as "other"), and each route answers errors in
its own shape (OpenAI's on the OpenAI routes, lmjax's elsewhere)."""

import pytest
import re

import httpx
from fastapi import FastAPI

from lmjax.data.sft import DEFAULT_TEMPLATE
from lmjax.serve.app import QA, create_app
from lmjax.serve.jobs import Limits
from lmjax.serve.local import serve_in_thread
from lmjax.serve.middleware import OPENAI_PATHS
from lmjax.serve.openai_api import add_openai_routes

pytestmark = pytest.mark.slow  # servers, subprocesses or trainings: the full suite

UNKNOWN = ["/nope", "/v1/nope/deeper", "/v1/generate/x", "/health.json"]


def _counted(base: str) -> dict[tuple[str, str], float]:
    text = httpx.get(f"{base}/metrics").text
    return {(path, status): float(value) for path, status, value in re.findall(
        r'^lmjax_requests_total\{path="([^"]*)",status="(\d+)"\} (\S+)$', text, re.M)}


def _openai_paths(generator) -> set[str]:
    """The paths add_openai_routes registers, read from a bare app."""
    app = FastAPI()
    builtin = {r.path for r in app.routes}  # /docs, /openapi.json and the like
    add_openai_routes(app, generator, "tiny", None, Limits(16, 16, "tiny"))
    return {r.path for r in app.routes} - builtin


def test_every_route_is_counted_as_itself_and_anything_else_as_other(tiny_generator):
    generator = tiny_generator(16)
    app = create_app(generator, source="tiny", max_slots=2, qa=QA(DEFAULT_TEMPLATE, ("\n",)))
    routes = [(r.path, "GET" if "GET" in r.methods else "POST") for r in app.routes]
    assert "/v1/qa" in {path for path, _ in routes}
    expected: dict[tuple[str, str], int] = {}
    with serve_in_thread(app) as base:
        for path, method in routes:
            url = base + re.sub(r"\{[^}]*\}", "x", path)  # /v1/models/{name:path}: a model
            # Its own method (an empty POST body: a 4xx before the device) and a wrong one.
            for m in (method, "PATCH"):
                status = httpx.request(m, url, timeout=30).status_code
                expected[path, str(status)] = expected.get((path, str(status)), 0) + 1
        for path in UNKNOWN:
            assert httpx.get(base + path).status_code == 404
        counted = _counted(base)
    assert expected[("/v1/qa", "405")] == 1 and ("/v1/qa", "422") in expected
    # One series per route and status, whatever the URL; every unknown path in one.
    assert counted == {**expected, ("other", "404"): len(UNKNOWN)}


def test_the_openai_routes_answer_errors_in_openais_shape(tiny_generator):
    generator = tiny_generator(16)
    openai = _openai_paths(generator)
    app = create_app(generator, source="tiny", max_slots=2, qa=QA(DEFAULT_TEMPLATE, ("\n",)))
    assert openai and all(path.startswith(OPENAI_PATHS) for path in openai)
    with serve_in_thread(app) as base:
        for route in app.routes:
            r = httpx.request("PATCH", base + re.sub(r"\{[^}]*\}", "x", route.path))
            assert r.status_code == 405
            if route.path in openai:
                assert r.json()["error"]["type"] == "invalid_request_error", route.path
            else:
                assert r.json() == {"error": "Method Not Allowed"}, route.path
