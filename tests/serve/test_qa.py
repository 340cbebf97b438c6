"""POST /v1/qa: an SFT run's template and stop strings around a greedy completion."""

import httpx
import pytest

from lmjax.data.sft import DEFAULT_TEMPLATE, format_prompt
from lmjax.models.generator import Request
from lmjax.serve.app import QA, create_app
from lmjax.serve.local import serve_in_thread

pytestmark = pytest.mark.slow  # servers, subprocesses or trainings: the full suite

BLOCK = 64


@pytest.fixture(scope="module")
def generator(tiny_generator):
    return tiny_generator(BLOCK, seed=1, max_batch=4,
                          chars="abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ.:?'\n")


QUESTION = "Who is Hamlet?"


@pytest.fixture(scope="module")
def stop(generator):
    """A stop string the greedy answer is known to contain (its 4th and 5th characters), so
    that the stop path runs with these random weights."""
    prompt = format_prompt(DEFAULT_TEMPLATE, QUESTION)
    text = generator.generate([Request(prompt, 12, temperature=0.0)])[0].text
    return text[3:5]


def test_qa_applies_the_template_and_stops_at_the_stop_string(generator, stop):
    app = create_app(generator, source="tiny", max_slots=2, qa=QA(DEFAULT_TEMPLATE, (stop,)))
    with serve_in_thread(app) as url:
        r = httpx.post(f"{url}/v1/qa", json={"question": QUESTION, "max_new_tokens": 12},
                       timeout=120)
        assert r.status_code == 200, r.text
        got = r.json()
        alone = generator.generate([Request(format_prompt(DEFAULT_TEMPLATE, QUESTION), 12,
                                            temperature=0.0, stop=(stop,))])[0]
        assert got["answer"] == alone.text.strip() and got["finish_reason"] == "stop"
        assert stop not in got["answer"]
        # The question and the answer must fit the context: a clear 422, not a crash.
        r = httpx.post(f"{url}/v1/qa", json={"question": "x" * BLOCK}, timeout=60)
        assert r.status_code == 422 and "context" in r.json()["error"]
        r = httpx.post(f"{url}/v1/qa", json={"question": QUESTION, "temperature": 1.0},
                       timeout=60)
        assert r.status_code == 422  # greedy only: unknown fields are refused


def test_qa_exists_only_for_sft_runs(generator):
    with serve_in_thread(create_app(generator, source="tiny", max_slots=2)) as url:
        assert httpx.post(f"{url}/v1/qa", json={"question": QUESTION}).status_code == 404
