"""``GET /openapi.json``: the OpenAPI 3.1 document of both dialects, built from the wire models.

Request bodies are the very pydantic models the edges validate with (``dialects/*_wire.py``), so the document
cannot drift from what is accepted; the answers are described by the models below, which the schemathesis
test (``tests/api/test_openapi.py``) holds every response to. The model names a gateway serves are listed as
``examples`` of each ``model`` field.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict
from pydantic.json_schema import models_json_schema

from tiergate.dialects.anthropic_wire import ACountTokensRequest, ARequest
from tiergate.dialects.openai_wire import OARequest

JSON = "application/json"
SSE = "text/event-stream"


class _Out(BaseModel):
    model_config = ConfigDict(extra="allow")  # answers may carry more than is described


# --- OpenAI answers ---------------------------------------------------------------------------------


class OAFunctionOut(_Out):
    name: str
    arguments: str


class OAToolCallOut(_Out):
    id: str
    type: Literal["function"]
    function: OAFunctionOut


class OAMessageOut(_Out):
    role: Literal["assistant"]
    content: str | None
    refusal: str | None = None
    tool_calls: list[OAToolCallOut] | None = None


class OAChoice(_Out):
    index: int
    message: OAMessageOut
    finish_reason: Literal["stop", "length", "tool_calls", "content_filter"]
    logprobs: None = None


class OAUsage(_Out):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class OAChatCompletion(_Out):
    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    choices: list[OAChoice]
    usage: OAUsage


class OAErrorBody(_Out):
    message: str
    type: str
    param: str | None
    code: str | None


class OAError(_Out):
    error: OAErrorBody


# --- Anthropic answers ------------------------------------------------------------------------------


class ATextOut(_Out):
    type: Literal["text"]
    text: str


class AToolUseOut(_Out):
    type: Literal["tool_use"]
    id: str
    name: str
    input: dict[str, Any]


class AUsageOut(_Out):
    input_tokens: int
    output_tokens: int
    cache_creation_input_tokens: int | None = None
    cache_read_input_tokens: int | None = None


class AMessageOut(_Out):
    id: str
    type: Literal["message"]
    role: Literal["assistant"]
    model: str
    content: list[ATextOut | AToolUseOut]
    stop_reason: Literal["end_turn", "max_tokens", "stop_sequence", "tool_use", "pause_turn", "refusal"] | None
    stop_sequence: str | None
    usage: AUsageOut


class ATokenCount(_Out):
    input_tokens: int


class AErrorBody(_Out):
    type: str
    message: str


class AError(_Out):
    type: Literal["error"]
    error: AErrorBody


# --- operational ------------------------------------------------------------------------------------


class ModelOut(_Out):
    id: str
    object: Literal["model"]
    type: Literal["model"]
    created: int
    created_at: str
    display_name: str
    owned_by: str


class ModelList(_Out):
    object: Literal["list"]
    data: list[ModelOut]
    has_more: bool
    first_id: str | None
    last_id: str | None


class Health(_Out):
    status: Literal["ok"]


class Ready(_Out):
    ready: bool
    backends: dict[str, dict[str, Any]]


_MODELS: list[type[BaseModel]] = [
    OARequest,
    ARequest,
    ACountTokensRequest,
    OAChatCompletion,
    OAError,
    AMessageOut,
    ATokenCount,
    AError,
    ModelList,
    Health,
    Ready,
]
ERROR_STATUSES = ("400", "401", "404", "405", "413", "429", "500", "502", "503", "504")


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def _content(model: type[BaseModel], stream: bool = False) -> dict[str, Any]:
    content: dict[str, Any] = {JSON: {"schema": _ref(model)}}
    if stream:
        content[SSE] = {"schema": {"type": "string", "description": "server-sent events, when stream is true"}}
    return content


def _errors(envelope: type[BaseModel]) -> dict[str, Any]:
    error = {"description": "an error, in the dialect's envelope", "content": _content(envelope)}
    return dict.fromkeys(ERROR_STATUSES, error)


def _answer(what: str, content: dict[str, Any]) -> dict[str, Any]:
    return {"description": what, "content": content}


def _chat(summary: str, request: type[BaseModel], answer: type[BaseModel], error: type[BaseModel]) -> dict[str, Any]:
    return {
        "post": {
            "summary": summary,
            "requestBody": {"required": True, "content": {JSON: {"schema": _ref(request)}}},
            "responses": {"200": _answer("the answer", _content(answer, stream=True)), **_errors(error)},
        }
    }


def document(model_names: list[str]) -> dict[str, Any]:
    """The OpenAPI document; ``model_names`` (what ``GET /v1/models`` lists) become the ``model`` examples."""
    _, defs = models_json_schema(
        [(m, "validation" if m in (OARequest, ARequest, ACountTokensRequest) else "serialization") for m in _MODELS],
        ref_template="#/components/schemas/{model}",
    )
    schemas: dict[str, Any] = defs["$defs"]
    for name in (OARequest.__name__, ARequest.__name__, ACountTokensRequest.__name__):
        schemas[name]["properties"]["model"]["examples"] = model_names
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "tiergate",
            "version": "1",
            "description": "OpenAI Chat Completions and Anthropic Messages, served by one gateway. Errors come "
            "in the caller's envelope: OpenAI's on /v1/chat/completions and /v1/models, Anthropic's on "
            "/v1/messages and /v1/messages/count_tokens. With keys configured, send `Authorization: Bearer KEY` "
            "or `x-api-key: KEY`.",
        },
        "paths": {
            "/v1/chat/completions": _chat("OpenAI Chat Completions", OARequest, OAChatCompletion, OAError),
            "/v1/messages": _chat("Anthropic Messages", ARequest, AMessageOut, AError),
            "/v1/messages/count_tokens": {
                "post": {
                    "summary": "Anthropic token counting",
                    "requestBody": {"required": True, "content": {JSON: {"schema": _ref(ACountTokensRequest)}}},
                    "responses": {"200": _answer("the count", _content(ATokenCount)), **_errors(AError)},
                }
            },
            "/v1/models": {
                "get": {
                    "summary": "the model names this gateway serves (readable by both SDKs)",
                    "responses": {"200": _answer("the list", _content(ModelList)), **_errors(OAError)},
                }
            },
            "/healthz": {"get": {"summary": "liveness", "responses": {"200": _answer("up", _content(Health))}}},
            "/readyz": {
                "get": {
                    "summary": "readiness, with each backend's state",
                    "responses": {
                        "200": _answer("ready", _content(Ready)),
                        "503": _answer("not ready", _content(Ready)),
                    },
                }
            },
            "/metrics": {
                "get": {
                    "summary": "Prometheus metrics",
                    "responses": {"200": _answer("the metrics", {"text/plain": {"schema": {"type": "string"}}})},
                }
            },
        },
        "components": {"schemas": schemas},
    }
