"""OpenAI's logprobs, from the one decoder's scores (lmjax/eval/scoring.py `RowScore`s of
the token row prompt + completion): the completion API's `{tokens, token_logprobs,
top_logprobs, text_offset}` (as OpenAI's legacy API and vLLM define them) and the chat API's
`{content: [{token, logprob, bytes, top_logprobs}]}`.

Log-probabilities are the model's own, before temperature, top-k or top-p (vLLM's default).
A token's text is its id decoded alone. Each entry of `top_logprobs` holds the k most likely
tokens and the chosen one (so up to k + 1, as OpenAI says); two ids that decode to the same
text keep the larger value.
"""

from __future__ import annotations

from collections.abc import Sequence

from lmjax.eval.scoring import RowScore


def _texts(tokenizer, ids: Sequence[int]) -> list[str]:
    return [tokenizer.decode([int(i)]) for i in ids]


def _offsets(tokenizer, ids: Sequence[int], texts: list[str]) -> list[int]:
    """Where each token starts in decode(ids): the running sum of the tokens' own texts where
    they add up to the whole (characters, whole-character BPE tokens), else each prefix
    decoded (tokens that split a character's bytes)."""
    if "".join(texts) == tokenizer.decode(list(ids)):
        out, at = [], 0
        for t in texts:
            out.append(at)
            at += len(t)
        return out
    return [len(tokenizer.decode(list(ids[:i]))) for i in range(len(ids))]


def _top(tokenizer, score: RowScore, i: int, chosen: int, k: int) -> dict[str, float]:
    """The k most likely tokens at entry i of `score`, and the chosen one."""
    pairs = list(zip(score.top_ids[i, :k].tolist(), score.top_logprobs[i, :k].tolist()))
    pairs.append((chosen, float(score.logprobs[i])))
    out: dict[str, float] = {}
    for token, value in pairs:
        text = tokenizer.decode([token])
        out[text] = max(out.get(text, -float("inf")), value)
    return out


def completion(tokenizer, ids: Sequence[int], score: RowScore, first: int, k: int) -> dict:
    """The completion API's logprobs of tokens ids[first:] (first 0: with the prompt, whose
    first token has none), offsets counted from ids[first]."""
    texts = _texts(tokenizer, ids[first:])
    logprobs = [None if i == 0 else float(score.logprobs[i - 1])
                for i in range(first, len(ids))]
    top = [None if i == 0 else _top(tokenizer, score, i - 1, ids[i], k)
           for i in range(first, len(ids))]
    return {"tokens": texts, "token_logprobs": logprobs, "top_logprobs": top,
            "text_offset": _offsets(tokenizer, ids[first:], texts)}


def chat(tokenizer, ids: Sequence[int], score: RowScore, first: int, k: int) -> dict:
    """The chat API's logprobs of the reply's tokens ids[first:] (first >= 1)."""
    content = []
    for i in range(first, len(ids)):
        text = tokenizer.decode([int(ids[i])])
        top = [{"token": t, "logprob": v, "bytes": list(t.encode("utf-8"))}
               for t, v in list(_top(tokenizer, score, i - 1, ids[i], k).items())[:k]]
        content.append({"token": text, "logprob": float(score.logprobs[i - 1]),
                        "bytes": list(text.encode("utf-8")), "top_logprobs": top})
    return {"content": content}
