"""The request and response bodies of every endpoint, lmjax's and OpenAI's (pydantic).

Request bodies are strict: "max_new_tokens": "20" is an error, not silently converted; an
unknown field is an error; NaN and Infinity, which Python's JSON parser reads, are refused
as numbers (they would otherwise fail only a range check, confusingly).
"""

from __future__ import annotations

from typing import Annotated, Literal

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


class CompletionBody(BaseModel):
    """OpenAI's completion request: the fields lmjax acts on, and the common ones it accepts
    only at their no-op values (a harness that sends them still works)."""
    model_config = STRICT

    model: str
    prompt: str | list[str]
    max_tokens: Annotated[int, Field(ge=1)] = 16
    temperature: Annotated[float, Field(ge=0, le=2)] = 1.0
    top_p: Annotated[float, Field(gt=0, le=1)] = 1.0
    top_k: Annotated[int, Field(ge=0, description="(not OpenAI's; vLLM's) 0: off")] = 0
    n: Annotated[int, Field(ge=1, le=16)] = 1
    stop: str | Annotated[list[str], Field(max_length=4)] | None = None
    seed: Annotated[int, Field(ge=0, lt=2**32)] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = None
    echo: Literal[False] = False
    logprobs: Literal[0] | None = None
    best_of: Literal[1] | None = None
    frequency_penalty: Literal[0] = 0
    presence_penalty: Literal[0] = 0
    suffix: None = None
