"""Chat messages rendered as the text a model continues: the one rendering that
/v1/chat/completions (lmjax/serve/openai_api.py) and SFT's chat records (lmjax/data/sft.py)
share, so a model is talked to the way it was fine-tuned.

A run renders with one of two templates (`ChatFormat.for_run`):

- **a Hugging Face chat template**, the jinja2 source in an imported model's
  tokenizer_config.json, read from the tokenizer by `hf_chat` (the one place lmjax reads it).
  It is rendered as transformers renders it: a sandboxed environment with `messages`,
  `add_generation_prompt`, `bos_token`, `eos_token`, `raise_exception` and `strftime_now`.
- **lmjax's default**, for its own runs: a chat is consecutive QA turns in the SFT template
  (`sft.template`, by default `Question: {prompt}\\nAnswer: {response}`, and `sft.end`,
  by default a blank line):

      system     its content, then a newline                  "Be brief.\\n"
      user       the template up to {response} around it      "Question: Who?\\nAnswer: "
      assistant  its content, then the end marker             "Romeo\\n\\n"

  A user turn ends with the answer cue, so the generation prompt adds nothing; a
  prompt/response record renders as the chat [user, assistant] does.

`pieces` cuts a chat's rendering at message boundaries by rendering its beginnings: an
assistant message's piece is what the render adds after the generation prompt, which SFT
learns; every other piece is prompt. A template whose rendering of a chat does not begin with
the rendering of its first messages (one that rewrites earlier turns) is refused there, since
the assistant's tokens could not be told apart.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import json
import re

DEFAULT_TEMPLATE = "Question: {prompt}\nAnswer: {response}"
DEFAULT_END = "\n\n"
ROLES = ("system", "user", "assistant")
_PROBE = "\x00lmjax-probe\x00"  # assistant content that no template writes by itself


class ChatError(ValueError):
    pass


@dataclasses.dataclass(frozen=True)
class HFChat:
    """A Hugging Face chat template and the special tokens it may name."""
    template: str
    bos_token: str = ""
    eos_token: str = ""


def hf_chat(tokenizer) -> HFChat | None:
    """The tokenizer's Hugging Face chat template, or None: the one accessor lmjax reads it
    through. Tokenizers imported from Hugging Face carry tokenizer_config.json's
    `chat_template` (a string, or a list of named templates, of which 'default' is used) and
    may carry `bos_token` and `eos_token` strings (lmjax/data/tokenizers.py); lmjax's own
    tokenizers have none of them."""
    template = getattr(tokenizer, "chat_template", None)
    if isinstance(template, (list, tuple)):  # [{"name": ..., "template": ...}, ...]
        named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
        template = named.get("default")
    if not isinstance(template, str) or not template:
        return None
    special = {k: getattr(tokenizer, k, None) for k in ("bos_token", "eos_token")}
    return HFChat(template, **{k: v for k, v in special.items() if isinstance(v, str)})


def qa_prompt(template: str, question: str) -> str:
    """The QA template up to '{response}' with the question in it (plain replacement, not
    str.format, so braces in a question are kept). sft.format_prompt checks the template."""
    return template[:-len("{response}")].replace("{prompt}", question)


@functools.lru_cache(maxsize=8)
def _compile(source: str):
    import jinja2  # noqa: lazy, optional extra (only imported models carry jinja templates)
    from jinja2.sandbox import ImmutableSandboxedEnvironment  # noqa: lazy, as above

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                          sort_keys=sort_keys)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=["jinja2.ext.loopcontrols"])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.datetime.now().strftime(fmt)
    # transformers' {% generation %} marks assistant text for its masks; lmjax finds it from
    # the rendering of prefixes instead (`pieces`), so the tags only need to render their body.
    source = re.sub(r"{%-?\s*(end)?generation\s*-?%}", "", source)
    return env.from_string(source)


@dataclasses.dataclass(frozen=True)
class ChatFormat:
    """How one run renders chats: its Hugging Face template (`hf`), else lmjax's default with
    the run's QA template and end marker."""
    hf: HFChat | None = None
    template: str = DEFAULT_TEMPLATE
    end: str = DEFAULT_END

    @classmethod
    def for_run(cls, tokenizer, template: str = DEFAULT_TEMPLATE,
                end: str = DEFAULT_END) -> "ChatFormat":
        """The tokenizer's Hugging Face template if it has one, else lmjax's default with
        `template` and `end` (an SFT run's sft.template and sft.end)."""
        return cls(hf=hf_chat(tokenizer), template=template, end=end)

    @property
    def name(self) -> str:
        return "the model's Hugging Face chat template" if self.hf else "lmjax's QA chat format"

    def render(self, messages: list[dict], add_generation_prompt: bool = True) -> str:
        """The text of `messages` ([{'role', 'content'}, ...], content a string); with
        `add_generation_prompt`, what then cues the assistant's reply."""
        if self.hf is not None:
            try:
                return _compile(self.hf.template).render(
                    messages=messages, add_generation_prompt=add_generation_prompt,
                    bos_token=self.hf.bos_token, eos_token=self.hf.eos_token)
            except Exception as e:  # noqa: BLE001 - jinja and the template raise many kinds
                raise ChatError(f"the chat template failed on these messages: "
                                f"{type(e).__name__}: {e}") from None
        out = []
        for m in messages:
            role, content = m["role"], m["content"]
            if role == "system":
                out.append(content + "\n")
            elif role == "user":
                out.append(qa_prompt(self.template, content))
            elif role == "assistant":
                out.append(content + self.end)
            else:
                raise ChatError(f"role {role!r}: lmjax's chat format has {', '.join(ROLES)}.")
        return "".join(out)

    def pieces(self, messages: list[dict]) -> list[tuple[str, bool]]:
        """The chat's rendering as [(text, is_assistant), ...], cut at message boundaries
        (and before each assistant message, after its generation prompt); empty pieces left
        out. Their texts join to `render(messages, add_generation_prompt=False)`."""
        out, done = [], ""
        for i, m in enumerate(messages):
            response = m["role"] == "assistant"
            if response:
                cue = self._prefix(messages[:i], True)
                if not cue.startswith(done):
                    raise self._unstable(i)
                out.append((cue[len(done):], False))
                done = cue
            upto = self._prefix(messages[:i + 1], False)
            if not upto.startswith(done):
                raise self._unstable(i)
            out.append((upto[len(done):], response))
            done = upto
        return [(t, r) for t, r in out if t]

    def _prefix(self, messages: list[dict], add_generation_prompt: bool) -> str:
        if messages:
            return self.render(messages, add_generation_prompt)
        try:  # many templates read messages[0] and fail on an empty chat: nothing rendered
            return self.render(messages, add_generation_prompt)
        except ChatError:
            return ""

    def _unstable(self, i: int) -> ChatError:
        return ChatError(f"{self.name} renders the chat up to message {i} as more than a "
                         "continuation of its rendering of the messages before (it rewrites "
                         "earlier turns), so the assistant's text cannot be told apart.")

    @functools.cached_property
    def turn_end(self) -> str:
        """What the format writes after an assistant's content ('\\n\\n' by default,
        '<|im_end|>' in ChatML): a stop string for the reply. Trailing whitespace is
        dropped unless that is all there is."""
        text = self.render([{"role": "user", "content": "?"},
                            {"role": "assistant", "content": _PROBE}], False)
        after = text[text.find(_PROBE) + len(_PROBE):] if _PROBE in text else ""
        return after.rstrip() or after
