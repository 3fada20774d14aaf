"""The two inbound dialects behind one small interface, so handlers never branch on the dialect."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from tiergate.dialects import anthropic, openai
from tiergate.errors import TiergateError
from tiergate.types import JSON, ChatRequest, ChatResponse, Dialect, StreamEvent


class StreamRenderer(Protocol):
    def start(self) -> bytes: ...
    def event(self, ev: StreamEvent) -> bytes: ...
    def error(self, exc: TiergateError) -> bytes: ...


@dataclass(frozen=True, slots=True)
class Edge:
    dialect: Dialect
    parse: Callable[[Any, Mapping[str, str], int], ChatRequest]  # the decoded body (api/intake.py)
    render: Callable[[ChatResponse, str], JSON]
    render_error: Callable[[TiergateError], JSON]
    renderer: Callable[[str, str, ChatRequest, int], StreamRenderer]
    #: The headers that carry the request id: ``x-request-id``, and ``request-id`` where the dialect's SDK reads it.
    id_headers: tuple[str, ...] = ("x-request-id",)

    def ids(self, request_id: str) -> dict[str, str]:
        return dict.fromkeys(self.id_headers, request_id)


OPENAI = Edge(
    Dialect.OPENAI,
    openai.parse_request,
    openai.render_response,
    openai.render_error,
    lambda rid, model, req, prompt_tokens: openai.StreamRenderer(rid, model, req.include_usage),
)
ANTHROPIC = Edge(
    Dialect.ANTHROPIC,
    anthropic.parse_request,
    anthropic.render_response,
    anthropic.render_error,
    lambda rid, model, req, prompt_tokens: anthropic.StreamRenderer(rid, model, prompt_tokens),
    ("x-request-id", "request-id"),  # the Anthropic SDK's ``_request_id``
)


def edge_for_path(path: str) -> Edge:
    return ANTHROPIC if path.startswith("/v1/messages") else OPENAI


def edge_for_headers(headers: Mapping[str, str]) -> Edge:
    """For the endpoints both SDKs call (``/v1/models``): the Anthropic SDK always sends ``anthropic-version``."""
    return ANTHROPIC if "anthropic-version" in headers else OPENAI
