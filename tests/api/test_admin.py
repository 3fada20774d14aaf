"""Liveness, readiness, metrics and the model list; /healthz stays responsive while the model is busy."""

from __future__ import annotations

import threading

import anthropic
import httpx
import openai
import pytest


def test_healthz_answers_while_embedded_model_generates(full_gateway: str) -> None:
    done = threading.Event()

    def generate() -> None:
        body = {"model": "local", "messages": [{"role": "user", "content": "Write a long poem."}], "max_tokens": 96}
        httpx.post(full_gateway + "/v1/chat/completions", json=body, timeout=120)
        done.set()

    worker = threading.Thread(target=generate)
    worker.start()
    try:
        busy = False
        for _ in range(200):  # wait until the generation is in flight
            backends = httpx.get(full_gateway + "/readyz").json()["backends"]
            if backends["local"]["in_flight"] > 0:
                busy = True
                break
            threading.Event().wait(0.02)
        assert busy
        resp = httpx.get(full_gateway + "/healthz", timeout=5)
        assert resp.status_code == 200
        assert resp.json() == {"status": "ok"}
        assert not done.is_set()  # answered while the model was still generating
    finally:
        worker.join()


def test_readyz_lists_backends(full_gateway: str) -> None:
    resp = httpx.get(full_gateway + "/readyz")
    assert resp.status_code == 200
    data = resp.json()
    assert data["ready"] is True
    assert data["backends"]["claude"]["tier"] == "closed"
    assert data["backends"]["local"]["kind"] == "embedded"


def test_metrics_count_requests_tokens_and_latency(fast_gateway: str) -> None:
    body = {"model": "vllm", "messages": [{"role": "user", "content": "hi"}]}
    assert httpx.post(fast_gateway + "/v1/chat/completions", json=body).status_code == 200
    text = httpx.get(fast_gateway + "/metrics").text
    assert 'tiergate_requests_total{backend="vllm",dialect="openai",status="ok",tier="open"}' in text
    assert 'tiergate_tokens_total{backend="vllm",direction="output",status="ok",tier="open"}' in text
    assert 'tiergate_request_seconds_bucket{backend="vllm",dialect="openai",le="0.005",status="ok",tier="open"}' in text
    assert 'tiergate_backend_up{backend="claude",tier="closed"} 1.0' in text
    assert 'tiergate_backend_circuit_state{backend="claude",state="closed",tier="closed"} 1.0' in text


def test_error_requests_are_counted(fast_gateway: str) -> None:
    httpx.post(fast_gateway + "/v1/chat/completions", json={"model": "nope", "messages": []})
    text = httpx.get(fast_gateway + "/metrics").text
    assert 'status="400"' in text


def test_models_for_the_anthropic_sdk(fast_gateway: str) -> None:
    client = anthropic.Anthropic(base_url=fast_gateway, api_key="x", max_retries=0)
    ids = [m.id for m in client.models.list()]
    assert ids[:3] == ["auto", "open", "closed"]
    assert "claude" in ids


@pytest.mark.parametrize("name", ["auto", "closed", "claude", "fake-llama-8b", "claude-haiku-4-5-20251001"])
def test_models_retrieve_with_both_sdks(fast_gateway: str, name: str) -> None:
    """Any name a request may use: tiers, backends, the models they serve, Claude's models."""
    by_anthropic = anthropic.Anthropic(base_url=fast_gateway, api_key="x", max_retries=0).models.retrieve(name)
    assert (by_anthropic.id, by_anthropic.type, by_anthropic.display_name) == (name, "model", name)
    by_openai = openai.OpenAI(base_url=fast_gateway + "/v1", api_key="x", max_retries=0).models.retrieve(name)
    assert (by_openai.id, by_openai.object, by_openai.owned_by) == (name, "model", "tiergate")


def test_models_retrieve_an_unknown_model_is_a_404_in_each_envelope(fast_gateway: str) -> None:
    with pytest.raises(anthropic.NotFoundError) as a_err:
        anthropic.Anthropic(base_url=fast_gateway, api_key="x", max_retries=0).models.retrieve("mistral-9")
    assert a_err.value.body["error"]["type"] == "not_found_error"  # type: ignore[index]
    assert "vllm" in a_err.value.message  # the message names what is served
    with pytest.raises(openai.NotFoundError) as o_err:
        openai.OpenAI(base_url=fast_gateway + "/v1", api_key="x", max_retries=0).models.retrieve("mistral-9")
    assert o_err.value.code == "model_not_found"


def test_the_anthropic_sdk_reads_the_request_id(fast_gateway: str) -> None:
    client = anthropic.Anthropic(base_url=fast_gateway, api_key="x", max_retries=0)
    raw = client.messages.with_raw_response.create(
        model="vllm", max_tokens=8, messages=[{"role": "user", "content": "hi"}]
    )
    assert raw.request_id == raw.headers["x-request-id"]
    assert raw.parse()._request_id == raw.headers["x-request-id"]
    with pytest.raises(anthropic.NotFoundError) as err:
        client.messages.create(model="mistral-9", max_tokens=8, messages=[{"role": "user", "content": "hi"}])
    assert err.value.request_id == err.value.response.headers["x-request-id"]
    with client.messages.stream(model="claude", max_tokens=8, messages=[{"role": "user", "content": "hi"}]) as s:
        assert s.response.headers["request-id"] == s.response.headers["x-request-id"]
