"""Anthropic Messages request schema, validated at the edge with pydantic."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from tiergate.dialects.common import check_image_source


class _Wire(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class ATextBlock(_Wire):
    type: Literal["text"]
    text: str


class AImageBlock(_Wire):
    type: Literal["image"]
    source: Annotated[dict[str, Any], AfterValidator(check_image_source)]


class AToolUseBlock(_Wire):
    type: Literal["tool_use"]
    id: str
    name: str
    input: dict[str, Any]


class AToolResultBlock(_Wire):
    type: Literal["tool_result"]
    tool_use_id: str
    content: str | list[ATextBlock | AImageBlock] | None = None
    is_error: bool = False


ABlock = Annotated[ATextBlock | AImageBlock | AToolUseBlock | AToolResultBlock, Field(discriminator="type")]


class AMessage(_Wire):
    role: Literal["user", "assistant"]
    content: str | list[ABlock]


class ATool(_Wire):
    name: str = Field(min_length=1, max_length=128)
    description: str | None = None
    input_schema: dict[str, Any]


class AToolChoice(_Wire):
    type: Literal["auto", "any", "tool", "none"]
    name: str | None = None
    disable_parallel_tool_use: bool | None = None


class AMetadata(_Wire):
    model_config = ConfigDict(extra="allow", frozen=True)
    user_id: str | None = None


class ARequest(_Wire):
    model: str = Field(min_length=1)
    max_tokens: int = Field(ge=1)
    messages: list[AMessage] = Field(min_length=1)
    system: str | list[ATextBlock] | None = None
    stop_sequences: list[str] | None = None
    stream: bool = False
    temperature: float | None = Field(None, ge=0, le=1)
    top_p: float | None = Field(None, ge=0, le=1)
    top_k: int | None = Field(None, ge=0)
    tools: list[ATool] | None = None
    tool_choice: AToolChoice | None = None
    metadata: AMetadata | None = None


class ACountTokensRequest(_Wire):
    model: str = Field(min_length=1)
    messages: list[AMessage] = Field(min_length=1)
    system: str | list[ATextBlock] | None = None
    tools: list[ATool] | None = None
