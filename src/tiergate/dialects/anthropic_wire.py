"""Anthropic Messages request schema, validated at the edge with pydantic.

Only what the gateway reads is checked; everything else in the body (``thinking``, ``cache_control``,
``container``, server tools, block types of the future) is the Messages API's to judge, and reaches Claude as it
came (:class:`tiergate.types.Native`). A block of a type the gateway does not read is an :class:`AOtherBlock`.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Discriminator, Field, Tag, field_validator

from tiergate.dialects.common import check_image_source
from tiergate.wire.anthropic import MESSAGES_BLOCKS, READ_BLOCKS


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


class ADocumentBlock(_Wire):
    type: Literal["document"]
    source: dict[str, Any]
    title: str | None = None
    context: str | None = None


class ASearchResultBlock(_Wire):
    type: Literal["search_result"]
    source: str
    title: str
    content: list[ATextBlock]


class AOtherBlock(_Wire):
    """A block the gateway does not read (``thinking``, ``redacted_thinking``, ``server_tool_use``, ...)."""

    type: str

    @field_validator("type")
    @classmethod
    def _known(cls, value: str) -> str:
        if value not in MESSAGES_BLOCKS:
            raise ValueError(f"{value!r} is not a content block type of the Messages API")
        return value


def _block_type(value: Any) -> str:
    kind = value.get("type") if isinstance(value, dict) else getattr(value, "type", None)
    return f"block:{kind if isinstance(kind, str) and kind in READ_BLOCKS else 'other'}"


ANestedBlock = Annotated[
    Annotated[ATextBlock, Tag("block:text")]
    | Annotated[AImageBlock, Tag("block:image")]
    | Annotated[ADocumentBlock, Tag("block:document")]
    | Annotated[ASearchResultBlock, Tag("block:search_result")]
    | Annotated[AOtherBlock, Tag("block:other")],
    Discriminator(_block_type),
]


class AToolResultBlock(_Wire):
    type: Literal["tool_result"]
    tool_use_id: str
    content: str | list[ANestedBlock] | None = None
    is_error: bool = False


ABlock = Annotated[
    Annotated[ATextBlock, Tag("block:text")]
    | Annotated[AImageBlock, Tag("block:image")]
    | Annotated[AToolUseBlock, Tag("block:tool_use")]
    | Annotated[AToolResultBlock, Tag("block:tool_result")]
    | Annotated[ADocumentBlock, Tag("block:document")]
    | Annotated[ASearchResultBlock, Tag("block:search_result")]
    | Annotated[AOtherBlock, Tag("block:other")],
    Discriminator(_block_type),
]


class AMessage(_Wire):
    role: Literal["user", "assistant"]
    content: str | list[ABlock]


class ATool(_Wire):
    """A tool: the caller's own (``input_schema``), or one Anthropic defines (``type``: web search, code
    execution, bash, ...), which has no schema and which only Claude knows."""

    name: str = Field(min_length=1, max_length=128)
    type: str | None = None
    description: str | None = None
    input_schema: dict[str, Any] | None = None


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
    tool_choice: AToolChoice | None = None


#: Top-level fields the canonical request carries; any other is reported when a backend does without it.
CANONICAL_FIELDS = frozenset(ARequest.model_fields)
