"""The real HTTP server (uvicorn on localhost, in a thread) driven by concurrent httpx clients."""

import asyncio
import json

import httpx
import pytest

from lmjax.models.generator import Request
from lmjax.serve.app import create_app
from lmjax.serve.local import serve_in_thread

pytestmark = pytest.mark.slow  # servers, subprocesses or trainings: the full suite

BLOCK = 32


@pytest.fixture(scope="module")
def generator(tiny_generator):
    return tiny_generator(BLOCK)


@pytest.fixture(scope="module")
def url(generator):
    app = create_app(generator, source="tiny test model", max_slots=4, max_body_bytes=2048)
    with serve_in_thread(app) as base:  # uvicorn on a free localhost port
        yield base


PROMPTS = ["ROMEO:", "a", "To be or not", "KING:", "Good morrow", "b", "What, ho", "x y z"]


def test_concurrent_clients_are_batched_and_get_their_own_answers(url, generator):
    bodies = [{"prompt": PROMPTS[i % 8], "max_new_tokens": 8 + i % 5,
               "temperature": 0.0 if i % 2 else 0.9, "seed": i} for i in range(16)]

    async def run():
        async with httpx.AsyncClient(base_url=url, timeout=120) as client:
            return await asyncio.gather(*(client.post("/v1/generate", json=b) for b in bodies))

    responses = asyncio.run(run())
    assert [r.status_code for r in responses] == [200] * 16
    for body, r in zip(bodies, responses):
        alone = generator.generate([Request(body["prompt"], body["max_new_tokens"],
                                            temperature=body["temperature"],
                                            seed=body["seed"])])[0]
        got = r.json()
        assert got["text"] == alone.text and got["tokens"] == body["max_new_tokens"]
        assert got["finish_reason"] == "length"
    metrics = httpx.get(f"{url}/metrics").text
    values = {line.split()[0]: float(line.split()[1]) for line in metrics.splitlines()
              if line and not line.startswith("#")}
    # The engine's generate steps held more than one request on average: they ran together.
    assert values["lmjax_step_slots_sum"] > values["lmjax_step_slots_count"] > 0
    assert values["lmjax_live_slots"] == 0 and values["lmjax_queue_depth"] == 0
    assert values['lmjax_requests_total{path="/v1/generate",status="200"}'] >= 16
    assert values["lmjax_generated_tokens_total"] >= sum(b["max_new_tokens"] for b in bodies)


def test_streaming_sends_the_same_text_piece_by_piece(url):
    body = {"prompt": "ROMEO:", "max_new_tokens": 12, "temperature": 0.8, "seed": 3}
    whole = httpx.post(f"{url}/v1/generate", json=body, timeout=60).json()
    events = []
    with httpx.stream("POST", f"{url}/v1/generate", json={**body, "stream": True},
                      timeout=60) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if line.startswith("data: "):
                events.append(line[len("data: "):])
    assert events[-1] == "[DONE]"
    final = json.loads(events[-2])
    pieces = [json.loads(e)["text"] for e in events[:-2]]
    assert len(pieces) > 1 and "".join(pieces) == whole["text"]
    assert final["finish_reason"] == "length" and final["tokens"] == 12


def test_stop_strings(url):
    free = httpx.post(f"{url}/v1/generate", json={"prompt": "KING:", "max_new_tokens": 20},
                      timeout=60).json()["text"]
    stop = free[5:7]
    r = httpx.post(f"{url}/v1/generate", json={"prompt": "KING:", "max_new_tokens": 20,
                                               "stop": [stop]}, timeout=60).json()
    assert r["text"] == free[:free.find(stop)] and r["finish_reason"] == "stop"


@pytest.mark.parametrize("content,status,words", [
    (b'{"prompt": "ab", "max_new_tokens": 4', 400, "malformed JSON"),
    (b'{"max_new_tokens": 4}', 422, "prompt: Field required"),
    (b'{"prompt": "ab", "max_new_tokens": "4"}', 422, "max_new_tokens"),
    (b'{"prompt": 12}', 422, "prompt"),
    (b'{"prompt": "ab", "max_new_tokens": 40}', 422, "context of 32 tokens"),
    (b'{"prompt": "ab", "max_new_tokens": 0}', 422, "greater than or equal to 1"),
    (b'{"prompt": "ab", "top_p": 1.5}', 422, "top_p"),
    (b'{"prompt": "ab", "temprature": 0.5}', 422, "temprature"),
    (b'{"prompt": "' + b"a" * 3000 + b'"}', 413, "over 2048 bytes"),
    (b'[1, 2]', 422, "body"),
    (b'{"prompt": "\xff\xfe"}', 400, "not UTF-8"),
    (b'{"prompt": "x", "temperature": NaN}', 422, "temperature: Input should be a finite number"),
    (b'{"prompt": "x", "top_p": Infinity}', 422, "top_p: Input should be a finite number"),
    (b'{"prompt": "x", "temperature": -Infinity}', 422, "finite number, not -inf"),
])
def test_bad_requests_get_a_clear_4xx(url, content, status, words):
    r = httpx.post(f"{url}/v1/generate", content=content,
                   headers={"content-type": "application/json"}, timeout=30)
    assert r.status_code == status, r.text
    assert list(r.json()) == ["error"] and words in r.json()["error"]


def test_chunked_bodies_get_the_same_answers_as_sized_ones(url):
    def chunked(*parts):  # a generator: httpx sends it chunked, without a Content-Length
        yield from parts

    headers = {"content-type": "application/json"}
    big = chunked(b'{"prompt": "', *[b"a" * 100] * 30, b'"}')
    r = httpx.post(f"{url}/v1/generate", content=big, headers=headers, timeout=30)
    assert r.status_code == 413 and r.json() == {"error": "request body over 2048 bytes"}
    r = httpx.post(f"{url}/v1/generate", content=chunked(b'{"prompt": "\xff"}'),
                   headers=headers, timeout=30)
    assert r.status_code == 400 and "not UTF-8" in r.json()["error"]
    small = chunked(b'{"prompt": "ab", ', b'"max_new_tokens": 3}')
    r = httpx.post(f"{url}/v1/generate", content=small, headers=headers, timeout=60)
    assert r.status_code == 200 and r.json()["tokens"] == 3


def test_every_error_has_the_same_shape(url, generator, monkeypatch):
    r = httpx.get(f"{url}/nope")
    assert r.status_code == 404 and r.json() == {"error": "Not Found"}
    r = httpx.get(f"{url}/v1/generate")
    assert r.status_code == 405 and r.json() == {"error": "Method Not Allowed"}
    monkeypatch.setattr(generator, "encode", lambda text: 1 / 0)
    r = httpx.post(f"{url}/v1/generate", json={"prompt": "ab"}, timeout=30)
    assert r.status_code == 500 and r.json() == {
        "error": "internal server error: ZeroDivisionError"}


def test_health_docs_metrics_and_still_serving_after_bad_requests(url):
    assert httpx.get(f"{url}/health").json()["status"] == "ok"
    assert httpx.get(f"{url}/docs").status_code == 200
    assert "/v1/generate" in httpx.get(f"{url}/openapi.json").json()["paths"]
    r = httpx.post(f"{url}/v1/generate", json={"prompt": "ab", "max_new_tokens": 3}, timeout=60)
    assert r.status_code == 200 and r.json()["tokens"] == 3
    metrics = httpx.get(f"{url}/metrics").text
    assert 'lmjax_requests_total{path="/v1/generate",status="422"}' in metrics
    assert "lmjax_time_to_first_token_seconds_count" in metrics
    values = _metrics(url)
    assert values["lmjax_inter_token_latency_seconds_count"] > 0
    assert values["lmjax_prefill_seconds"] > 0 and values["lmjax_decode_step_seconds"] > 0
    assert values["lmjax_tokens_per_second"] > 0


def test_the_static_batcher_is_still_selectable(generator):
    app = create_app(generator, engine="static", max_batch=8, max_wait_s=0.05)
    bodies = [{"prompt": p, "max_new_tokens": 6, "temperature": 0.9, "seed": i}
              for i, p in enumerate(PROMPTS[:4])]

    async def run(base):
        async with httpx.AsyncClient(base_url=base, timeout=120) as client:
            return await asyncio.gather(*(client.post("/v1/generate", json=b) for b in bodies))

    with serve_in_thread(app) as base:
        responses = asyncio.run(run(base))
        values = _metrics(base)
    for body, r in zip(bodies, responses):
        alone = generator.generate([Request(body["prompt"], 6, temperature=0.9,
                                            seed=body["seed"])])[0]
        assert r.status_code == 200 and r.json()["text"] == alone.text
    assert values["lmjax_batch_size_sum"] == 4


def _metrics(base):
    text = httpx.get(f"{base}/metrics").text
    return {line.split()[0]: float(line.split()[1]) for line in text.splitlines()
            if line and not line.startswith("#")}
