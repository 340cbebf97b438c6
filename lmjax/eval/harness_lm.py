"""An lmjax model as an lm-evaluation-harness model: lm_eval's `LM` interface
(`loglikelihood`, `loglikelihood_rolling`, `generate_until`) over the one decoder.

    lm = LmjaxLM(model, params, tokenizer)
    lm_eval.simple_evaluate(model=lm, tasks=["hellaswag"])

Requests are batched by length, not run one at a time: every loglikelihood request of a task
(and every window of every rolling document) is scored together by `Scorer` (sorted by
length, a few padded shapes, `decoding.score`), and generations run as batches of the
`Generator`. Contexts and continuations are encoded as lm-eval's own API models encode them
(TemplateLM: the whole text, then the context's tokens split off), so in-process scores equal
those of lm-eval's `local-completions` against lmjax's server.

Imports lm_eval: lmjax/eval/harness.py imports this module only when harness tasks run.
"""

from __future__ import annotations

import json

import numpy as np
from lm_eval import utils as lm_utils
from lm_eval.api.model import TemplateLM
from tqdm import tqdm

from lmjax.data.chat import ChatFormat
from lmjax.eval.scoring import Scorer
from lmjax.models.generator import Generator, Request


class LmjaxLM(TemplateLM):
    """lm-eval's model interface for a decoder (GPT, LSTM/GRU) and its tokenizer.

    The prefix token, which conditions a document's first token (empty contexts, rolling
    log-likelihoods), is the separator lmjax puts between documents in prepared data: the
    tokenizer's end-of-text token, or a newline for characters (lmjax/data/prepare.py).
    """

    def __init__(self, model, params, tokenizer, batch_size: int = 32,
                 max_gen_toks: int = 256, max_tokens: int = 8192, chat: ChatFormat | None = None):
        super().__init__()
        self.chat = chat or ChatFormat.for_run(tokenizer)  # lm_eval --apply_chat_template
        self.generator = Generator(model, params, tokenizer, max_batch=batch_size)
        self.scorer = Scorer(self.generator.model, self.generator.params,
                             max_batch=batch_size, max_tokens=max_tokens)
        self.text_tokenizer = tokenizer  # (TemplateLM's `tokenizer` means a Hugging Face one)
        self.context = self.generator.block_size
        self.max_gen_toks = max_gen_toks
        eot = self.generator.eot_id
        self._prefix = int(eot) if eot is not None else int(tokenizer.encode("\n")[0])

    @property
    def eot_token_id(self) -> int | None:
        return self.generator.eot_id

    @property
    def prefix_token_id(self) -> int:
        return self._prefix

    @property
    def tokenizer_name(self) -> str:
        return f"lmjax-{self.text_tokenizer.kind}"

    def chat_template(self, chat_template: bool | str = False) -> str:
        return self.chat.hf.template if self.chat.hf else self.chat.name

    def apply_chat_template(self, chat_history: list[dict], add_generation_prompt=True) -> str:
        """The run's chat rendering (lmjax/data/chat.py), as the server's chat endpoint has
        it."""
        return self.chat.render(chat_history, add_generation_prompt)

    def tok_encode(self, string: str, add_special_tokens=None, **kwargs) -> list[int]:
        return self.text_tokenizer.encode(string).tolist()

    def tok_decode(self, tokens) -> str:
        return self.text_tokenizer.decode(tokens)

    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, **kwargs):
        """(sum of the continuation's log-probabilities, whether each of its tokens is the
        most likely) for every (key, context ids, continuation ids), scored in one go. A row
        longer than the context + 1 loses the beginning of its context."""
        rows = [(ctx + cont)[-(self.context + 1):] for _, ctx, cont in requests]
        out = []
        for (key, _, cont), row, s in zip(requests, rows,
                                          self.scorer(rows) if rows else []):
            n = len(cont)
            result = (float(np.sum(s.logprobs[-n:], dtype=np.float64)),
                      bool((s.greedy[-n:] == np.asarray(row[-n:])).all()))
            out.append(result)
            if key is not None:
                self.cache_hook.add_partial("loglikelihood", key, result)
        return out

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        """Each document's log-likelihood, token by token: windows of the model's context,
        each predicting every token it holds but the first (the one before: the prefix token
        for the document's first window), as lm-eval's rolling windows define them. A text
        that starts after a document separator gets exactly the windows of lmjax's own
        validation loss."""
        windows, owner = [], []
        for j, (text,) in enumerate(r.args for r in requests):
            for ctx, cont in map(lm_utils.make_disjoint_window, lm_utils.get_rolling_token_windows(
                    token_list=self.tok_encode(text), prefix_token=self.prefix_token_id,
                    max_seq_len=self.context, context_len=1)):
                windows.append((None, ctx, cont))
                owner.append(j)
        totals = [0.0] * len(requests)
        for j, (ll, _) in zip(owner, self._loglikelihood_tokens(windows)):
            totals[j] += ll
        for r, total in zip(requests, totals):
            self.cache_hook.add_partial("loglikelihood_rolling", r.args, total)
        return totals

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        """Continuations up to the first of each request's `until` strings (or end-of-text,
        or max_gen_toks), greedy unless do_sample; requests with the same settings run in
        batches of the Generator, longest first."""
        groups: dict[str, list[int]] = {}
        for i, r in enumerate(requests):
            groups.setdefault(json.dumps(r.args[1], sort_keys=True, default=str), []).append(i)
        out: list[str] = [""] * len(requests)
        for indices in tqdm(groups.values(), disable=disable_tqdm, desc="generate_until"):
            kw = dict(requests[indices[0]].args[1])
            until = kw.pop("until", None) or []
            until = (until,) if isinstance(until, str) else tuple(until)
            new = int(kw.pop("max_gen_toks", self.max_gen_toks))
            temperature = float(kw.pop("temperature", 0.0)) if kw.pop("do_sample", False) else 0.0
            keep = max(1, self.context - new)  # the context's end, leaving room for the answer
            batch = [Request(prompt="", max_new_tokens=new, temperature=temperature,
                             seed=int(kw.get("seed", 0)), stop=until,
                             prompt_ids=tuple(self.tok_encode(requests[i].args[0])[-keep:]))
                     for i in indices]
            order = sorted(range(len(batch)), key=lambda b: -len(batch[b].prompt_ids))
            done = self.generator.generate([batch[b] for b in order])
            for b, completion in zip(order, done):
                out[indices[b]] = completion.text
                self.cache_hook.add_partial("generate_until", requests[indices[b]].args,
                                            completion.text)
        return out
