"""Three `tiergate serve` processes sharing Redis (limits) and PostgreSQL (ledger), behind no load balancer:
each request goes to one of them in turn. 2,000 concurrent requests for one key: the budget holds to within one
request's reservation, the rate limit is exact, every answer is in the one ledger. Then one replica is SIGKILLed
under load: the other two serve on, and what it held is bounded by its reservations and their TTL.

The upstream is the fake OpenAI-compatible server in a process of its own (the open tier; the closed tier is
the same server with Claude's prices), so the gateways, not the upstream, are what is loaded.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
import redis

from tests.fakes import Delay, Reply, script_marker
from tests.support.databases import fresh_postgres_database, postgres_base_url
from tests.support.ledger import rows_of
from tests.support.redis import redis_base_url, unique_prefix
from tests.support.servers import free_port
from tests.support.upstream import MODEL
from tiergate.accounting.ledger import Ledger
from tiergate.accounting.schema import LedgerRow
from tiergate.limits.scripts import key_names
from tiergate.pipeline.admit import estimate_usage
from tiergate.types import ChatRequest, Message

ROOT = Path(__file__).resolve().parents[1]
BURST = 2000
PRICE = {"input_per_mtok": 3.0, "output_per_mtok": 15.0}  # the closed tier's, per million tokens
TTL_S = 30.0
KEYS = [
    {"name": "money", "key": "sk-money", "budget_usd_per_month": 0.15},
    {"name": "rate", "key": "sk-rate", "requests_per_minute": 400},
    {"name": "held", "key": "sk-held", "budget_usd_per_month": 100.0},
]
# Each closed request really produces the 100 tokens it reserves: the budget binds after about 100 of them.
MONEY_TEXT = "Hello " + script_marker(Reply(text="ok", usage={"completion_tokens": 100}))
HELD_TEXT = "Hello " + script_marker(Delay(4.0, Reply(text="ok")))  # held upstream: in flight when killed


@dataclass
class Replica:
    url: str
    process: subprocess.Popen[bytes]


@dataclass
class Cluster:
    replicas: list[Replica]
    ledger_url: str
    redis_url: str
    prefix: str
    logs: Path
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def account(self, key: str) -> dict[str, str]:
        client = redis.Redis.from_url(self.redis_url, decode_responses=True)
        try:
            state = client.hgetall(key_names(self.prefix, key)[0])
            assert isinstance(state, dict)
            return {str(k): str(v) for k, v in state.items()}
        finally:
            client.close()


def _wait_ready(url: str, process: subprocess.Popen[bytes], log: Path, path: str = "/readyz") -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{url} exited ({process.returncode}): {log.read_text()[-2000:]}")
        try:
            if httpx.get(url + path, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{url} not ready: {log.read_text()[-2000:]}")


def _spawn(argv: list[str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(argv, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    pg, redis_url = postgres_base_url(), redis_base_url()
    logs = tmp_path_factory.mktemp("replicas")
    loop = asyncio.new_event_loop()
    database = fresh_postgres_database(pg)
    ledger_url = loop.run_until_complete(database.__aenter__())
    procs: list[subprocess.Popen[bytes]] = []
    try:
        ledger = Ledger(ledger_url)  # migrated once, before three processes would race to do it
        loop.run_until_complete(ledger.start())
        loop.run_until_complete(ledger.close())
        up_port = free_port()
        upstream = f"http://127.0.0.1:{up_port}"
        fake = ["-m", "uvicorn", "--factory", "tests.support.upstream:fake_openai", "--log-level", "warning"]
        procs.append(_spawn([sys.executable, *fake, "--port", str(up_port), "--no-access-log"], logs / "upstream.log"))
        prefix = unique_prefix()
        config = {
            "backends": [
                {"name": "fleet", "tier": "open", "kind": "openai", "base_url": upstream + "/v1", "model": MODEL},
                {"name": "claude", "tier": "closed", "kind": "openai", "base_url": upstream + "/v1", "model": MODEL,
                 "price": PRICE},
            ],
            "router": {"kind": "rules"},
            "keys": KEYS,
            "ledger": {"url": ledger_url},
            "redis": {"url": redis_url, "prefix": prefix, "reservation_ttl_s": TTL_S},
        }  # fmt: skip
        path = logs / "tiergate.yaml"
        path.write_text(json.dumps(config))
        replicas = []
        for n in range(3):
            port = free_port()
            argv = [sys.executable, "-m", "tiergate", "serve", "--config", str(path), "--port", str(port)]
            process = _spawn([*argv, "--log-level", "warning"], logs / f"gateway-{n}.log")
            procs.append(process)
            replicas.append(Replica(f"http://127.0.0.1:{port}", process))
        _wait_ready(upstream, procs[0], logs / "upstream.log", "/health")
        for n, replica in enumerate(replicas):
            _wait_ready(replica.url, replica.process, logs / f"gateway-{n}.log")
        yield Cluster(replicas, ledger_url, redis_url, prefix, logs, procs)
    finally:
        for process in procs:
            if process.poll() is None:
                process.terminate()
        for process in procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=20)
            if process.poll() is None:
                process.kill()
        loop.run_until_complete(database.__aexit__(None, None, None))
        loop.close()


def request(n: int, key: str, model: str, text: str) -> tuple[str, dict[str, Any], dict[str, str]]:
    """The n-th request of a burst: OpenAI and Anthropic dialects in turn."""
    body = {"model": model, "max_tokens": 100, "messages": [{"role": "user", "content": text}]}
    if n % 2:
        return "/v1/chat/completions", body, {"authorization": f"Bearer {key}"}
    return "/v1/messages", body, {"x-api-key": key, "anthropic-version": "2023-06-01"}


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


async def post(url: str, path: str, body: dict[str, Any], headers: dict[str, str]) -> Answer:
    """One request on a connection of its own: a minimal HTTP/1.1 client, because at 2,000 requests httpx would
    spend more CPU in this process than the three gateways under test (the machine has two cores)."""
    host, port = url.removeprefix("http://").split(":")
    payload = json.dumps(body).encode()
    head = f"POST {path} HTTP/1.1\r\nhost: {host}\r\ncontent-type: application/json\r\nconnection: close\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + f"content-length: {len(payload)}\r\n\r\n"
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(head.encode() + payload)
        raw = await reader.read(-1)
    finally:
        writer.close()
    if not raw:
        raise ConnectionResetError(f"{url} closed the connection without an answer")
    top, _, content = raw.partition(b"\r\n\r\n")
    lines = top.decode("latin-1").split("\r\n")
    fields = dict(line.split(": ", 1) for line in lines[1:])
    return Answer(int(lines[0].split(" ")[1]), {k.lower(): v for k, v in fields.items()}, content)


async def burst(urls: list[str], count: int, key: str, model: str, text: str) -> list[Answer | BaseException]:
    """``count`` requests at once, spread over ``urls`` in turn; a connection error is returned, not raised."""

    async def one(n: int) -> Answer:
        path, body, headers = request(n, key, model, text)
        return await post(urls[n % len(urls)], path, body, headers)

    return await asyncio.gather(*(one(n) for n in range(count)), return_exceptions=True)


def answered(results: list[Answer | BaseException]) -> list[Answer]:
    errors = [r for r in results if not isinstance(r, Answer)]
    assert not errors, errors[:3]
    return [r for r in results if isinstance(r, Answer)]


async def wait_ledger(url: str, ids: set[str]) -> dict[str, LedgerRow]:
    """The ledger rows of ``ids``, once every replica's writer has flushed them (30 s at most)."""
    deadline = time.monotonic() + 30.0
    while True:
        rows = {r.request_id: r for r in await rows_of(url) if r.request_id in ids}
        if len(rows) == len(ids) or time.monotonic() > deadline:
            return rows
        await asyncio.sleep(0.2)


def reservation_usd(text: str) -> float:
    usage = estimate_usage(ChatRequest(model="closed", messages=[Message.text("user", text)], max_tokens=100))
    return (usage.input_tokens * PRICE["input_per_mtok"] + usage.output_tokens * PRICE["output_per_mtok"]) / 1e6


async def test_a_budget_holds_across_three_replicas(cluster: Cluster) -> None:
    urls = [r.url for r in cluster.replicas]
    replies = answered(await burst(urls, BURST, "sk-money", "closed", MONEY_TEXT))
    codes = [r.status for r in replies]
    assert set(codes) <= {200, 429}, sorted(set(codes))
    assert all("monthly budget" in r.json()["error"]["message"] for r in replies if r.status == 429)
    rows = await wait_ledger(cluster.ledger_url, {r.headers["x-request-id"] for r in replies})
    assert len(rows) == BURST  # every answer, served or refused, from whichever replica
    spent = sum(row.cost_usd for row in rows.values())
    one = reservation_usd(MONEY_TEXT)
    assert spent <= 0.15 + one  # overspend at most one request's reservation
    assert spent >= 0.9 * 0.15  # and used: each request really costs about 97% of what it reserves
    assert codes.count(200) == sum(1 for row in rows.values() if row.status == "ok")
    assert float(cluster.account("money")["spent"]) == pytest.approx(spent, abs=1e-9)
    assert float(cluster.account("money")["reserved"]) == pytest.approx(0.0, abs=1e-12)


async def test_a_rate_limit_is_exact_across_three_replicas(cluster: Cluster) -> None:
    urls = [r.url for r in cluster.replicas]
    replies = answered(await burst(urls, BURST, "sk-rate", "open", "Hello"))
    codes = [r.status for r in replies]
    assert (codes.count(200), codes.count(429)) == (400, BURST - 400)
    refused = [r for r in replies if r.status == 429]
    assert all(1 <= int(r.headers["retry-after"]) <= 60 for r in refused)
    assert {r.json()["error"]["type"] for r in refused} == {"rate_limit_exceeded", "rate_limit_error"}
    rows = await wait_ledger(cluster.ledger_url, {r.headers["x-request-id"] for r in replies})
    assert len(rows) == BURST


async def test_one_replica_killed_under_load(cluster: Cluster) -> None:
    a, b, c = cluster.replicas
    load = asyncio.ensure_future(burst([a.url, b.url, c.url], 300, "sk-held", "closed", HELD_TEXT))
    one = reservation_usd(HELD_TEXT)
    deadline = time.monotonic() + 60
    while float(cluster.account("held").get("reserved", 0)) < 150 * one:  # half the requests admitted, in flight
        assert time.monotonic() < deadline, "the requests were never admitted"
        await asyncio.sleep(0.05)
    c.process.kill()
    results = await load
    after = answered(await burst([a.url, b.url], 100, "sk-held", "closed", "Hello"))  # and they serve on

    by_replica = [results[n::3] for n in range(3)]
    for served in (by_replica[0], by_replica[1]):
        assert [r.status for r in answered(served)] == [200] * len(served)
    assert all(isinstance(r, OSError) for r in by_replica[2])  # cut: nothing completed on C
    assert [r.status for r in after] == [200] * 100
    survivors = [r for r in [*by_replica[0], *by_replica[1], *after] if isinstance(r, Answer)]
    rows = await wait_ledger(cluster.ledger_url, {r.headers["x-request-id"] for r in survivors})
    assert len(rows) == len(survivors)

    # What C held: its requests' reservations, no more, each released at most TTL_S after it was made.
    client = redis.Redis.from_url(cluster.redis_url, decode_responses=True)
    try:
        entries = client.zrange(key_names(cluster.prefix, "held")[1], 0, -1, withscores=True)
        held = [expires for _, expires in cast(list[tuple[str, float]], entries)]
        seconds, micros = client.time()
    finally:
        client.close()
    now_ms = seconds * 1000 + micros // 1000
    assert 0 < len(held) <= len(by_replica[2])
    assert all(now_ms < expires <= now_ms + TTL_S * 1000 for expires in held)
    assert float(cluster.account("held")["reserved"]) == pytest.approx(len(held) * one, rel=1e-6)
