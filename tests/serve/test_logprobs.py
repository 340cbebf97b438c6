"""OpenAI's logprobs shapes from scores (lmjax/serve/logprobs.py), without a model or server:
offsets where tokens split a character's bytes, the chosen token in every top list, ids that
decode alike; and the refusals of fields lmjax does not act on."""

import numpy as np
import pytest

from lmjax.data.tokenizers import BPETokenizer, CharTokenizer
from lmjax.eval.scoring import RowScore
from lmjax.serve import logprobs as lp
from lmjax.serve.jobs import Refused
from lmjax.serve.openai_api import _messages, refuse_unsupported
from lmjax.serve.schemas import ChatBody, ChatMessage, CompletionBody


def _score(n: int, k: int, top_ids) -> RowScore:
    rng = np.random.default_rng(0)
    return RowScore(logprobs=-rng.random(n - 1).astype(np.float32) - 1,
                    greedy=np.zeros(n - 1, np.int32),
                    top_logprobs=-np.sort(rng.random((n - 1, k)), axis=1).astype(np.float32),
                    top_ids=np.asarray(top_ids, np.int32).reshape(n - 1, k))


def test_completion_logprobs_with_tokens_that_split_characters():
    tok = BPETokenizer.train(["héllo wörld " * 50], vocab_size=300)
    ids = tok.encode("wörld héllo").tolist()
    ids = [b for i in ids for b in tok.encode(tok.decode([i]))]  # as the tokenizer has them
    raw = [tok._tok.token_to_id(c) for c in ("Ã", "¶")]  # the two bytes of 'ö', apart
    ids = ids[:1] + raw + ids[1:]
    text = tok.decode(ids)
    score = _score(len(ids), 2, [ids[1:][i // 2] for i in range(2 * (len(ids) - 1))])
    out = lp.completion(tok, ids, score, 0, 2)
    assert out["token_logprobs"][0] is None and out["top_logprobs"][0] is None
    assert out["text_offset"] == [len(tok.decode(ids[:i])) for i in range(len(ids))]
    assert out["text_offset"][-1] < len(text)
    for i in range(1, len(ids)):
        top = out["top_logprobs"][i]
        # Both top ids are the chosen token here: one entry, the larger of its values.
        assert top == {tok.decode([ids[i]]): pytest.approx(max(
            score.logprobs[i - 1], *score.top_logprobs[i - 1]))}
    without_echo = lp.completion(tok, ids, score, 3, 2)
    assert without_echo["tokens"] == out["tokens"][3:]
    assert without_echo["text_offset"][0] == 0


def test_chat_logprobs_list_the_top_tokens_then_the_chosen_ones():
    tok = CharTokenizer("\x00abc")
    ids = [1, 2, 3, 1]
    score = _score(4, 2, [[2, 3], [1, 3], [3, 1]])
    out = lp.chat(tok, ids, score, 2, 2)["content"]
    assert [c["token"] for c in out] == ["c", "a"]
    assert [t["token"] for t in out[0]["top_logprobs"]] == ["a", "c"]
    assert out[1]["logprob"] == pytest.approx(float(score.logprobs[2]))
    assert out[0]["bytes"] == [99]


def test_fields_lmjax_does_not_act_on_are_refused_by_name():
    def refused(body) -> str:
        with pytest.raises(Refused) as e:
            refuse_unsupported(body)
        return e.value.param

    base = dict(model="m", prompt="x")
    refuse_unsupported(CompletionBody(**base, best_of=1, logit_bias={}, suffix=""))
    assert refused(CompletionBody(**base, suffix="end")) == "suffix"
    assert refused(CompletionBody(**base, presence_penalty=1.0)) == "presence_penalty"
    assert refused(CompletionBody(**base, logprobs=0, stream=True)) == "logprobs"
    chat = dict(model="m", messages=[ChatMessage(role="user", content="hi")])
    refuse_unsupported(ChatBody(**chat, tools=[], tool_choice="none",
                                response_format={"type": "text"}))
    assert refused(ChatBody(**chat, response_format={"type": "json_object"})) == \
        "response_format"
    assert refused(ChatBody(**chat, function_call="auto")) == "function_call"
    assert _messages([ChatMessage(role="developer", content="x")]) == [
        {"role": "system", "content": "x"}]
    with pytest.raises(Refused, match="messages\\[0\\].role='critic'"):
        _messages([ChatMessage(role="critic", content="x")])
