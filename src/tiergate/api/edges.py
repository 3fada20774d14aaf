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
)


def edge_for_path(path: str) -> Edge:
    return ANTHROPIC if path.startswith("/v1/messages") else OPENAI
