"""The request and response bodies of every endpoint, lmjax's and OpenAI's (pydantic).

Request bodies are strict: "max_new_tokens": "20" is an error, not silently converted; an
unknown field is an error; NaN and Infinity, which Python's JSON parser reads, are refused
as numbers (they would otherwise fail only a range check, confusingly).
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

STRICT = ConfigDict(strict=True, extra="forbid", allow_inf_nan=False)


class GenerateBody(BaseModel):
    model_config = STRICT

    prompt: Annotated[str, Field(min_length=1, description="Text to continue.")]
    max_new_tokens: Annotated[int, Field(ge=1, description="Tokens to generate; prompt plus "
                                         "these must fit the model's context.")] = 100
    temperature: Annotated[float, Field(ge=0, le=100, description="0: greedy.")] = 0.0
    top_k: Annotated[int, Field(ge=0, description="0: no top-k cut.")] = 0
    top_p: Annotated[float, Field(gt=0, le=1, description="1: no nucleus cut.")] = 1.0
    seed: Annotated[int, Field(ge=0, lt=2**32)] = 0
    stop: Annotated[list[str], Field(max_length=4, description="Up to 4 stop strings; the "
                                     "text ends before the first one generated.")] = []
    stream: Annotated[bool, Field(description="Server-sent events: one per new piece of "
                                  "text, then one with the finish reason.")] = False


class GenerateResponse(BaseModel):
    text: str
    tokens: int
    finish_reason: str
    seconds: float


class QABody(BaseModel):
    model_config = STRICT

    question: Annotated[str, Field(min_length=1, description="The question, as the SFT run's "
                                   "template puts it after 'Question: '.")]
    max_new_tokens: Annotated[int, Field(ge=1, description="Most answer tokens.")] = 32


class QAResponse(BaseModel):
    answer: str
    tokens: int
    finish_reason: str
    seconds: float


class ClassifyBody(BaseModel):
    model_config = STRICT

    texts: Annotated[list[Annotated[str, Field(min_length=1)]],
                     Field(min_length=1, max_length=64, description="1 to 64 texts; longer "
                           "ones are truncated to the model's context.")]
    return_attention: bool = Field(False, description="Also return, per text, how much [CLS] "
                                   "attends to each token: the attention rollout and the last "
                                   "layer's map (mean over heads).")


class Attention(BaseModel):
    tokens: list[str]
    rollout: list[float]
    last_layer: list[float]


class Classification(BaseModel):
    label: str
    probabilities: dict[str, float]
    truncated: bool
    attention: Attention | None = None


class ClassifyResponse(BaseModel):
    results: list[Classification]


class StreamOptions(BaseModel):
    model_config = STRICT
    include_usage: bool = False


# OpenAI's bodies: typed as strictly as lmjax's, but a field lmjax does not know is ignored, as
# vLLM ignores it (harnesses and clients send their own extras); it is named in the response
# header `lmjax-ignored-fields`. A field OpenAI defines that lmjax does not support is refused
# by name unless it has its no-op value (openai_api.py: `refuse_unsupported`).
OPENAI = ConfigDict(strict=True, extra="allow", allow_inf_nan=False)
TokenIds = Annotated[list[Annotated[int, Field(ge=0)]], Field(min_length=1)]
Stop = str | Annotated[list[str], Field(max_length=4)] | None


class Sampled(BaseModel):
    """What the completion and chat bodies share: the model, sampling, stops, streaming, and
    OpenAI's fields accepted only at their no-op values."""
    model_config = OPENAI

    model: str
    temperature: Annotated[float, Field(ge=0, le=2)] = 1.0
    top_p: Annotated[float, Field(gt=0, le=1)] = 1.0
    top_k: Annotated[int, Field(ge=0, description="(not OpenAI's; vLLM's) 0: off")] = 0
    n: Annotated[int, Field(ge=1, le=16)] = 1
    stop: Stop = None
    seed: Annotated[int, Field(ge=0, lt=2**32)] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = None
    frequency_penalty: float = 0
    presence_penalty: float = 0
    logit_bias: dict | None = None


class CompletionBody(Sampled):
    """OpenAI's completion request. `prompt` is text or token ids, one prompt or a list (one
    choice per prompt, times n). `echo` puts the prompt before the completion in `text`, and
    with `logprobs` scores the prompt's tokens too (the first has none); `max_tokens` 0 with
    `echo` scores the prompt alone."""
    prompt: str | list[str] | TokenIds | list[TokenIds]
    max_tokens: Annotated[int, Field(ge=0)] = 16
    echo: bool = False
    logprobs: Annotated[int, Field(ge=0, le=20)] | None = None
    best_of: int | None = None
    suffix: str | None = None


class ContentPart(BaseModel):
    model_config = OPENAI
    type: str
    text: str | None = None


class ChatMessage(BaseModel):
    model_config = OPENAI
    role: str
    content: str | list[ContentPart] | None = None
    name: str | None = None


class ChatBody(Sampled):
    """OpenAI's chat request: the messages rendered by the run's chat format
    (lmjax/data/chat.py), then continued like a completion. `logprobs` scores the reply's
    tokens, `top_logprobs` adds that many alternatives per token."""
    messages: Annotated[list[ChatMessage], Field(min_length=1)]
    max_tokens: Annotated[int, Field(ge=1)] | None = None
    max_completion_tokens: Annotated[int, Field(ge=1)] | None = None
    logprobs: bool = False
    top_logprobs: Annotated[int, Field(ge=0, le=20)] | None = None
    tools: list | None = None
    tool_choice: str | dict | None = None
    functions: list | None = None
    function_call: str | dict | None = None
    response_format: dict | None = None


class TokenizeBody(BaseModel):
    """vLLM's POST /tokenize (what lm-eval's remote tokenizer calls): text, or chat messages
    rendered by the run's chat format."""
    model_config = OPENAI
    prompt: str | None = None
    messages: list[ChatMessage] | None = None
    add_special_tokens: bool = True
    add_generation_prompt: bool = True


class DetokenizeBody(BaseModel):
    model_config = OPENAI
    tokens: list[Annotated[int, Field(ge=0)]]
