"""OpenAI Chat Completions request schema, validated at the edge with pydantic.

Unknown top-level fields are ignored (clients send many optional knobs we do not use), but every field we
read is type-checked, so a wrong type is a 400 naming the field rather than a surprise later.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from tiergate.dialects.common import check_image_url


class _Wire(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class OAImageUrl(_Wire):
    url: Annotated[str, AfterValidator(check_image_url)]
    detail: str | None = None


class OAContentPart(_Wire):
    type: Literal["text", "image_url"]
    text: str | None = None
    image_url: OAImageUrl | None = None


class OAFunctionCall(_Wire):
    name: str
    arguments: str


class OAToolCall(_Wire):
    id: str
    type: Literal["function"] = "function"
    function: OAFunctionCall


class OAMessage(_Wire):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[OAContentPart] | None = None
    name: str | None = None
    tool_calls: list[OAToolCall] | None = None
    tool_call_id: str | None = None
    refusal: str | None = None


class OAFunctionDef(_Wire):
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class OATool(_Wire):
    type: Literal["function"]
    function: OAFunctionDef


class OANamedFunction(_Wire):
    name: str


class OANamedToolChoice(_Wire):
    type: Literal["function"]
    function: OANamedFunction


class OAJsonSchema(_Wire):
    name: str = "response"
    schema_: dict[str, Any] | None = Field(None, alias="schema")
    strict: bool | None = None
    description: str | None = None


class OAResponseFormat(_Wire):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: OAJsonSchema | None = None


class OAStreamOptions(_Wire):
    include_usage: bool = False


class OARequest(_Wire):
    model: str = Field(min_length=1)
    messages: list[OAMessage] = Field(min_length=1)
    stream: bool = False
    stream_options: OAStreamOptions | None = None
    tools: list[OATool] | None = None
    tool_choice: Literal["none", "auto", "required"] | OANamedToolChoice | None = None
    response_format: OAResponseFormat | None = None
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, ge=0, le=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    stop: str | list[str] | None = None
    seed: int | None = None
    user: str | None = None
    n: int | None = Field(None, ge=1, le=1)
    metadata: dict[str, str] | None = None
    parallel_tool_calls: bool | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = Field(None, ge=0, le=20)


#: Top-level fields the canonical request carries (or translates); any other is reported when it is dropped.
CANONICAL_FIELDS = frozenset(OARequest.model_fields)
