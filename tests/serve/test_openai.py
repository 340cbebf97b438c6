"""The OpenAI-compatible endpoints, driven by the official `openai` client against uvicorn on
127.0.0.1 (no network), plus the limits: a full queue, a client that goes away."""

import time

import httpx
import pytest

from lmjax.models.generator import Request
from lmjax.serve.app import create_app
from lmjax.serve.engine import warm_up
from lmjax.serve.local import serve_in_thread

pytestmark = pytest.mark.slow  # servers, subprocesses or trainings: the full suite

openai = pytest.importorskip("openai")

BLOCK = 32  # the shared server's context (conftest.py)


def _alone(generator, prompt, n, **kw):
    return generator.generate([Request(prompt, n, **kw)])[0]


def test_the_playground_page_is_served_at_the_root(url):
    page = httpx.get(f"{url}/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert 'id="prompt"' in page.text and "/v1/completions" in page.text


def test_plain_completion_and_models(client, generator):
    assert [m.id for m in client.models.list()] == ["tiny"]
    r = client.completions.create(model="tiny", prompt="ROMEO:", max_tokens=10, temperature=0)
    assert r.object == "text_completion" and r.model == "tiny"
    assert r.choices[0].text == _alone(generator, "ROMEO:", 10).text
    assert r.choices[0].finish_reason == "length"
    assert (r.usage.prompt_tokens, r.usage.completion_tokens, r.usage.total_tokens) == (6, 10, 16)


def test_n_choices_with_a_seed_are_each_the_seeded_run(client, generator):
    r = client.completions.create(model="tiny", prompt=["KING:", "a"], max_tokens=6, n=2,
                                  temperature=0.9, seed=5)
    texts = [c.text for c in sorted(r.choices, key=lambda c: c.index)]
    assert texts == [_alone(generator, p, 6, temperature=0.9, seed=5 + j).text
                     for p in ("KING:", "a") for j in range(2)]
    assert r.usage.completion_tokens == 24


def test_streamed_completion_is_the_plain_one_in_pieces(client):
    kw = dict(model="tiny", prompt="To be", max_tokens=12, temperature=0.8, seed=3)
    whole = client.completions.create(**kw).choices[0].text
    chunks = list(client.completions.create(**kw, stream=True,
                                            stream_options={"include_usage": True}))
    pieces = [c.choices[0].text for c in chunks if c.choices]
    assert len(pieces) > 2 and "".join(pieces) == whole
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].usage.completion_tokens == 12


def test_stop_strings(client, generator):
    free = _alone(generator, "KING:", 20).text
    stop = free[5:7]
    r = client.completions.create(model="tiny", prompt="KING:", max_tokens=20, temperature=0,
                                  stop=stop)
    assert r.choices[0].text == free[:free.find(stop)] and r.choices[0].finish_reason == "stop"
    streamed = client.completions.create(model="tiny", prompt="KING:", max_tokens=20,
                                         temperature=0, stop=[stop, "zzz"], stream=True)
    assert "".join(c.choices[0].text for c in streamed) == r.choices[0].text


def test_invalid_requests_raise_the_clients_own_errors(client, url):
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model="tiny", prompt="ab", max_tokens=40)
    assert "context of 32 tokens" in e.value.message
    assert e.value.body["code"] == "context_length_exceeded"
    with pytest.raises(openai.BadRequestError, match="temperature"):
        client.completions.create(model="tiny", prompt="ab", temperature=3)
    with pytest.raises(openai.NotFoundError, match="gpt-4"):
        client.completions.create(model="gpt-4", prompt="ab")
    r = httpx.post(f"{url}/v1/completions", content=b'{"model": "tiny", "prompt": ',
                   headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"
    assert "malformed JSON" in r.json()["error"]["message"]


def test_a_full_queue_is_429_and_health_still_answers(generator):
    app = create_app(generator, model_name="tiny", max_slots=4, max_queue=0)
    with serve_in_thread(app) as base:
        client = openai.OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0)
        with pytest.raises(openai.RateLimitError, match="queue"):
            client.completions.create(model="tiny", prompt="ab", max_tokens=2)
        r = httpx.post(f"{base}/v1/generate", json={"prompt": "ab", "max_new_tokens": 2})
        assert r.status_code == 429 and "queue" in r.json()["error"]
        assert httpx.get(f"{base}/health").json()["status"] == "ok"


def test_a_client_that_goes_away_frees_its_slot_at_once(generator):
    app = create_app(generator, model_name="tiny", max_slots=4)
    engine = app.state.engine
    warm_up(engine, log=lambda _: None)  # compiles first: the timing below is the cancel's
    step = engine._step
    engine._step = lambda: (time.sleep(0.05), step())  # a slow model: 30 tokens take 1.5 s
    body = {"model": "tiny", "prompt": "ROMEO:", "max_tokens": 26, "stream": True}
    with serve_in_thread(app) as base:
        with httpx.stream("POST", f"{base}/v1/completions", json=body, timeout=30) as r:
            assert r.status_code == 200
            next(r.iter_lines())  # the first piece has come: the request holds a slot
            assert engine.live_count() == 1
        t = time.perf_counter()  # ... and the client hangs up
        while engine.live_count() and time.perf_counter() - t < 5:
            time.sleep(0.01)
        freed = time.perf_counter() - t
        metrics = httpx.get(f"{base}/metrics").text
    assert engine.live_count() == 0 and freed < 0.5, freed
    assert "lmjax_cancelled_requests_total 1.0" in metrics
