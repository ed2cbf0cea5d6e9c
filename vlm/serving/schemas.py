"""Pydantic models of the OpenAI chat-completions API: the subset this server reads and everything it answers.

Request fields this server does not use (``user``, ``logprobs``, ``frequency_penalty`` ...) are accepted and
ignored, as OpenAI-compatible servers do; the ones it reads are validated here, with the offending field in
every error (see :func:`error_param`). Numbers must be finite: Python's JSON reader takes ``NaN`` and
``Infinity``, which would otherwise slip past every range check.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

# --------------------------------------------------------------------------------------------- request


class _In(BaseModel):
    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)


class TextPart(_In):
    type: Literal["text"]
    text: str


class ImageURL(_In):
    url: str = Field(min_length=1, description="a data:image/...;base64 URL, a file:// URL or a path on the server")
    detail: Literal["auto", "low", "high"] | None = None


class ImagePart(_In):
    type: Literal["image_url"]
    image_url: ImageURL


ContentPart = Annotated[TextPart | ImagePart, Field(discriminator="type")]


class Message(_In):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[ContentPart] | None = None
    name: str | None = None

    @model_validator(mode="after")
    def _images_from_the_user(self) -> Message:
        if self.role != "user" and isinstance(self.content, list) and any(isinstance(p, ImagePart) for p in self.content):
            raise ValueError(f"images are only accepted in user messages (this one is {self.role})")
        return self

    def parts(self) -> list[TextPart | ImagePart]:
        if self.content is None:
            return []
        return [TextPart(type="text", text=self.content)] if isinstance(self.content, str) else list(self.content)


class StreamOptions(_In):
    include_usage: bool = False


class ChatCompletionRequest(_In):
    model: str | None = None
    messages: list[Message] = Field(min_length=1)
    temperature: float | None = Field(None, ge=0.0, le=2.0, description="0 = greedy (the default)")
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1, description="wins over max_tokens")
    seed: int | None = Field(None, gt=-(2**63), lt=2**63)
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    n: Literal[1] | None = Field(None, description="only n=1 is served")

    def texts(self) -> list[str]:
        """The non-empty text parts of the system / developer / user messages, in order (what the model reads)."""
        return [p.text.strip() for m in self.messages if m.role != "assistant" for p in m.parts()
                if isinstance(p, TextPart) and p.text.strip()]

    def image_urls(self) -> list[str]:
        return [p.image_url.url for m in self.messages for p in m.parts() if isinstance(p, ImagePart)]


def error_param(loc: tuple) -> tuple[str | None, str]:
    """A pydantic error location -> (the top-level request field, a readable path like ``messages[0].content[1]``).

    Union branches add their own names to a location (``str``, ``list[...]``, a tagged part's tag after its
    index): those are left out of the path."""
    loc = tuple(x for x in loc if x != "body")
    path = ""
    for i, x in enumerate(loc):
        if isinstance(x, int):
            path += f"[{x}]"
        elif x == "str" or "[" in x or (i > 0 and isinstance(loc[i - 1], int) and x in PART_TAGS and i + 1 < len(loc)):
            continue
        else:
            path += f".{x}" if path else x
    first = loc[0] if loc and isinstance(loc[0], str) else None
    return first, path


PART_TAGS = ("text", "image_url")


# -------------------------------------------------------------------------------------------- response


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class Choice(BaseModel):
    index: int = 0
    message: AssistantMessage
    finish_reason: Literal["stop", "length"]


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    usage: Usage


class Delta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None


class ChunkChoice(BaseModel):
    index: int = 0
    delta: Delta
    finish_reason: Literal["stop", "length"] | None = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: Usage | None = None


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "mlmono"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorBody(BaseModel):
    """Every 4xx / 5xx answer: ``{"error": {"message", "type", "param", "code"}}`` (what OpenAI clients parse)."""

    error: ErrorDetail
