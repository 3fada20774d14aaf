"""``GET /openapi.json`` describes both dialects, and schemathesis holds the live gateway to it: bodies generated
from the schema (valid and not) never get a 5xx, and every answer has a documented status, content type and
shape. Bounded: ``TIERGATE_SCHEMATHESIS_EXAMPLES`` examples per operation (default 40)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.conftest import backend_configs, serve_gateway
from tests.fakes import FakeAnthropic, FakeOpenAI
from tiergate.config import parse_config

EXAMPLES = int(os.environ.get("TIERGATE_SCHEMATHESIS_EXAMPLES", "40"))
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@pytest.fixture(scope="module")
def gateway(fake_claude: tuple[FakeAnthropic, str], fake_openai: tuple[FakeOpenAI, str]) -> Iterator[str]:
    config = parse_config({"backends": backend_configs(fake_claude[1], fake_openai[1]), "router": {"kind": "rules"}})
    with serve_gateway(config) as url:
        yield url


@pytest.fixture(scope="module")
def document(gateway: str) -> dict[str, Any]:
    resp = httpx.get(gateway + "/openapi.json", timeout=10)
    assert resp.status_code == 200
    doc: dict[str, Any] = resp.json()
    return doc


@pytest.fixture(scope="module")
def api_schema(document: dict[str, Any]) -> Any:
    """The served document, with each ``model`` drawn from the names served (its examples), so that generated
    requests reach the backends instead of stopping at a 404."""
    schemas = document["components"]["schemas"]
    for name in ("OARequest", "ARequest", "ACountTokensRequest"):
        model = schemas[name]["properties"]["model"]
        model["enum"] = model["examples"]
    return schemathesis.openapi.from_dict(document)


def test_the_document_covers_both_dialects(document: dict[str, Any]) -> None:
    assert document["openapi"] == "3.1.0"
    assert set(document["paths"]) >= {"/v1/chat/completions", "/v1/messages", "/v1/messages/count_tokens", "/v1/models"}
    schemas = document["components"]["schemas"]
    assert schemas["ARequest"]["required"] == ["model", "max_tokens", "messages"]
    assert schemas["OARequest"]["properties"]["model"]["examples"] == ["auto", "open", "closed", "vllm", "claude"]
    bad = document["paths"]["/v1/messages"]["post"]["responses"]["400"]["content"]["application/json"]["schema"]
    assert bad == {"$ref": "#/components/schemas/AError"}


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck))
def test_the_gateway_keeps_to_its_schema(case: Any, gateway: str) -> None:
    case.call_and_validate(base_url=gateway, checks=CHECKS, timeout=30)
