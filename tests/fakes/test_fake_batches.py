"""The fake's Message Batches API, driven by the official ``anthropic`` SDK's ``messages.batches``."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import anthropic
import pytest

from tests.fakes import FakeAnthropic, Fault, Hang, Reply, script_marker
from tests.support.servers import serve_app


@pytest.fixture
def claude() -> Iterator[tuple[FakeAnthropic, anthropic.Anthropic]]:
    fake = FakeAnthropic(api_key="sk-ant-test")
    with serve_app(fake) as url:
        yield fake, anthropic.Anthropic(base_url=url, api_key="sk-ant-test", max_retries=0)


def request(custom_id: str, text: str, **params: Any) -> Any:
    body = {"model": "claude-sonnet-4-5", "max_tokens": 64, "messages": [{"role": "user", "content": text}]}
    return {"custom_id": custom_id, "params": {**body, **params}}


def test_create_poll_and_results_joined_by_custom_id(claude: tuple[FakeAnthropic, anthropic.Anthropic]) -> None:
    _, client = claude
    batch = client.messages.batches.create(
        requests=[request(f"r{i}", f"question {i}") for i in range(20)] + [request("odd", script_marker(Reply("x")))]
    )
    assert batch.id.startswith("msgbatch_")
    assert (batch.type, batch.processing_status, batch.results_url, batch.ended_at) == (
        "message_batch",
        "in_progress",
        None,
        None,
    )
    assert (batch.request_counts.processing, batch.request_counts.succeeded) == (21, 0)
    assert (batch.expires_at - batch.created_at).total_seconds() == 24 * 3600
    first = client.messages.batches.retrieve(batch.id)  # batch_polls=1: the first retrieve is still in progress
    assert first.processing_status == "in_progress"
    ended = client.messages.batches.retrieve(batch.id)
    assert ended.processing_status == "ended"
    assert ended.ended_at is not None
    assert (ended.request_counts.succeeded, ended.request_counts.processing) == (21, 0)
    assert ended.results_url == f"{str(client.base_url).rstrip('/')}/v1/messages/batches/{batch.id}/results"
    results = {r.custom_id: r.result for r in client.messages.batches.results(batch.id)}
    assert set(results) == {f"r{i}" for i in range(20)} | {"odd"}
    assert list(results) != sorted(results, key=lambda c: (len(c), c))  # no promised order: joined by custom_id
    r3 = results["r3"]
    assert r3.type == "succeeded"
    block = r3.message.content[0]
    assert block.type == "text"
    assert "question 3" in block.text
    assert r3.message.usage.output_tokens > 0
    odd = results["odd"]
    assert odd.type == "succeeded"
    assert odd.message.content[0].type == "text"
    assert odd.message.content[0].text == "x"


def test_partial_failure_and_bad_params_errored_at_processing(
    claude: tuple[FakeAnthropic, anthropic.Anthropic],
) -> None:
    _, client = claude
    batch = client.messages.batches.create(
        requests=[
            request("ok", "fine"),
            request("overloaded", script_marker(Fault(529))),
            request("bad", "no max tokens", max_tokens=0),  # validated when processed, like the real API
            request("streamed", "x", stream=True),
        ]
    )
    assert batch.processing_status == "in_progress"  # creation accepted every request
    client.messages.batches.retrieve(batch.id)
    ended = client.messages.batches.retrieve(batch.id)
    assert (ended.request_counts.succeeded, ended.request_counts.errored) == (1, 3)
    results = {r.custom_id: r.result for r in client.messages.batches.results(batch.id)}
    assert results["ok"].type == "succeeded"
    errors = {k: v for k, v in results.items() if v.type == "errored"}
    assert {k: v.error.error.type for k, v in errors.items() if v.type == "errored"} == {
        "overloaded": "overloaded_error",
        "bad": "invalid_request_error",
        "streamed": "invalid_request_error",
    }
    bad = errors["bad"]
    assert bad.type == "errored"
    assert "max_tokens" in bad.error.error.message


def test_expiry_and_cancel(claude: tuple[FakeAnthropic, anthropic.Anthropic]) -> None:
    fake, client = claude
    slow = client.messages.batches.create(requests=[request("done", "a"), request("late", script_marker(Hang()))])
    for _ in range(3):  # a request that is never processed keeps its batch in progress
        assert client.messages.batches.retrieve(slow.id).processing_status == "in_progress"
    fake.batches.expire()
    ended = client.messages.batches.retrieve(slow.id)
    assert ended.processing_status == "ended"
    assert (ended.request_counts.succeeded, ended.request_counts.expired) == (1, 1)
    results = {r.custom_id: r.result.type for r in client.messages.batches.results(slow.id)}
    assert results == {"done": "succeeded", "late": "expired"}

    other = client.messages.batches.create(requests=[request("a", "a"), request("b", script_marker(Hang()))])
    canceling = client.messages.batches.cancel(other.id)
    assert canceling.processing_status == "canceling"
    assert canceling.cancel_initiated_at is not None
    ended = client.messages.batches.retrieve(other.id)
    assert (ended.processing_status, ended.request_counts.canceled) == ("ended", 1)
    assert {r.custom_id: r.result.type for r in client.messages.batches.results(other.id)} == {
        "a": "succeeded",
        "b": "canceled",
    }


def test_list_newest_first_with_pages_and_delete(claude: tuple[FakeAnthropic, anthropic.Anthropic]) -> None:
    _, client = claude
    ids = [client.messages.batches.create(requests=[request("x", str(i))]).id for i in range(5)]
    page = client.messages.batches.list(limit=2)
    assert [b.id for b in page.data] == ids[::-1][:2]
    assert page.has_more
    assert [b.id for b in client.messages.batches.list(limit=2)] == ids[::-1]  # auto-pagination (after_id)
    newer = client.messages.batches.list(limit=2, before_id=ids[1])
    assert [b.id for b in newer.data] == [ids[3], ids[2]]
    with pytest.raises(anthropic.BadRequestError, match="still processing"):
        client.messages.batches.delete(ids[0])
    client.messages.batches.retrieve(ids[0])
    client.messages.batches.retrieve(ids[0])
    assert client.messages.batches.delete(ids[0]).type == "message_batch_deleted"
    with pytest.raises(anthropic.NotFoundError):
        client.messages.batches.retrieve(ids[0])


def test_create_is_validated_and_needs_a_key(claude: tuple[FakeAnthropic, anthropic.Anthropic]) -> None:
    fake, client = claude
    with pytest.raises(anthropic.BadRequestError, match="Duplicate custom_id"):
        client.messages.batches.create(requests=[request("same", "a"), request("same", "b")])
    with pytest.raises(anthropic.BadRequestError, match="custom_id"):
        client.messages.batches.create(requests=[request("has space", "a")])
    with pytest.raises(anthropic.BadRequestError, match="at least 1 item"):
        client.messages.batches.create(requests=[])
    wrong = anthropic.Anthropic(base_url=str(client.base_url), api_key="wrong", max_retries=0)
    with pytest.raises(anthropic.AuthenticationError):
        wrong.messages.batches.create(requests=[request("a", "a")])
    assert fake.batches.all == []
    with pytest.raises(anthropic.NotFoundError) as exc:
        client.messages.batches.retrieve("msgbatch_nope")
    assert json.loads(exc.value.response.text)["error"]["type"] == "not_found_error"
