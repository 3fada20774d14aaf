"""Bedrock and Vertex: the same Messages request, built by the SDK's cloud clients (not reachable here).

A capture server on loopback stands in for the cloud endpoint, so the test sees the real URL, headers and
body the SDK sends, and answers with a real Messages response.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tests.support.servers import serve_app
from tiergate.backends import build_backend, default_registry
from tiergate.config import BedrockConfig, VertexConfig
from tiergate.types import ChatRequest, Message, Tier

REPLY = {
    "id": "msg_cloud",
    "type": "message",
    "role": "assistant",
    "model": "claude-sonnet-4-5",
    "content": [{"type": "text", "text": "from the cloud"}],
    "stop_reason": "end_turn",
    "stop_sequence": None,
    "usage": {"input_tokens": 11, "output_tokens": 3},
}


class Capture:
    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []

    async def handle(self, request: Request) -> JSONResponse:
        body = json.loads(await request.body())
        self.seen.append({"path": request.url.path, "headers": dict(request.headers), "body": body})
        return JSONResponse(REPLY)


@pytest.fixture
def capture() -> Iterator[tuple[Capture, str]]:
    cap = Capture()
    app = Starlette(routes=[Route("/{path:path}", cap.handle, methods=["POST"])])
    with serve_app(app) as url:
        yield cap, url


def _request() -> ChatRequest:
    return ChatRequest(model="closed", system="Be brief.", messages=[Message.text("user", "hello")], max_tokens=9)


async def test_bedrock_request(capture: tuple[Capture, str], monkeypatch: pytest.MonkeyPatch) -> None:
    cap, url = capture
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY")
    config = BedrockConfig(
        name="bedrock",
        tier=Tier.CLOSED,
        region="us-east-1",
        base_url=url,
        model="anthropic.claude-sonnet-4-5-20250929-v1:0",
    )
    backend = build_backend(config, default_registry())
    await backend.start()
    try:
        resp = await backend.complete(_request())
    finally:
        await backend.close()
    assert resp.text == "from the cloud"
    assert resp.usage.input_tokens == 11
    seen = cap.seen[0]
    assert seen["path"] == "/model/anthropic.claude-sonnet-4-5-20250929-v1:0/invoke"
    assert seen["headers"]["authorization"].startswith("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/")
    assert "/us-east-1/bedrock/aws4_request" in seen["headers"]["authorization"]
    body = seen["body"]
    assert "model" not in body  # Bedrock takes the model from the URL
    assert body["anthropic_version"]  # Bedrock wants the API version in the body
    assert body["messages"] == [{"role": "user", "content": [{"type": "text", "text": "hello"}]}]
    assert body["system"] == "Be brief."
    assert body["max_tokens"] == 9


async def test_vertex_request(capture: tuple[Capture, str], monkeypatch: pytest.MonkeyPatch) -> None:
    cap, url = capture
    monkeypatch.setenv("TIERGATE_TEST_VERTEX_TOKEN", "ya29.test-token")
    config = VertexConfig(
        name="vertex",
        tier=Tier.CLOSED,
        region="europe-west1",
        project_id="acme-ml",
        base_url=url,
        model="claude-sonnet-4-5@20250929",
        api_key_env="TIERGATE_TEST_VERTEX_TOKEN",
    )
    backend = build_backend(config, default_registry())
    await backend.start()
    try:
        resp = await backend.complete(_request())
    finally:
        await backend.close()
    assert resp.text == "from the cloud"
    seen = cap.seen[0]
    assert seen["path"] == (
        "/projects/acme-ml/locations/europe-west1/publishers/anthropic/models/claude-sonnet-4-5@20250929:rawPredict"
    )
    assert seen["headers"]["authorization"] == "Bearer ya29.test-token"
    assert seen["body"]["anthropic_version"]  # so does Vertex
    assert "model" not in seen["body"]
    assert seen["body"]["max_tokens"] == 9
