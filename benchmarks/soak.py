"""Soak: many concurrent streaming clients through tiergate for a minute, with faults injected in a share of them.

    python benchmarks/soak.py [--clients 500] [--duration 60] [--fault-rate 0.05] [--out docs/benchmarks-reliability.md]

Every party is its own process on loopback: two open-tier replicas (``tests/fakes/fake_openai.py``, ``r1`` and
``r2``), one closed-tier Claude (``tests/fakes/fake_anthropic.py``, ``claude``), each under uvicorn behind
:class:`Injector`; tiergate (``python -m tiergate serve``, ``router: {kind: open}``, ``stall_timeout_s: 2``, the
rest of the configuration at its defaults, the ledger in SQLite); and the load generator, this script: ``--clients``
keep-alive connections, each sending its next streaming request (``model: open``; 85% OpenAI dialect, 15%
Anthropic) as soon as the last one ended. The first ``--warmup`` seconds are not counted.

**Faults.** A client puts a fault in ``--fault-rate`` of its requests, as a marker ``[[soak:{...}]]`` in the
user message (it survives the gateway, which forwards no unknown header). Kinds, equally likely: an HTTP 5xx
before the first byte (once or twice), a 429 with ``Retry-After: 0.5`` (once or twice), the connection cut
after 2-8 events (``CutStream``), a 10 s stall after 2-8 events (``StallStream``, over the gateway's 2 s stall
timeout), a malformed stream (once or twice). The first upstream that sees the request *claims* the fault (an
``O_EXCL`` file, so exactly one upstream process gets it) and plays it the given number of times; every other
upstream answers it normally, so a retry, a failover or a continuation can always save it: any failure is
*avoidable*. A share of the faults (``--all-share``, 10%) is played by *every* upstream, every time: those
requests cannot succeed and must end with an explicit error, never as a short success (*unavoidable*).

**Checks.** Every upstream answers the same text (:data:`REPLY`), so the client checks each answer in full. A
stream that was cut and continued elsewhere must still be exactly :data:`REPLY`: the injector plays a model that
continues a final assistant message (as Claude and llama.cpp's server do), so a continuation gives back only
the rest. The real Anthropic API's rule that a final assistant message may not end in whitespace is enforced by
the injector too. Outcomes: *ok* (success marker, text = REPLY), *truncated* (success marker, text a strict
prefix of REPLY: silently short), *corrupt* (success marker, any other text), *failed* (an HTTP error, an
error event, no success marker, or a transport error; *explicit* when the client was told so by a status or
an error event). Memory: the gateway's ``VmRSS`` from ``/proc``, sampled every second.

**Event loop.** The gateway probes its own loop: a timer every 10 ms (``server.loop_lag_interval_s``) whose
lateness is ``tiergate_event_loop_lag_seconds`` in ``/metrics``, read at the start and the end of the measured
window (a hold of the loop for ``H`` ms shows as a lag of at least ``H - 10`` ms); the part of each lag the
gateway spent on a CPU (``tiergate_event_loop_busy_seconds``) tells its own work from waiting for a CPU.
``--big-count-tokens N`` adds ``N`` clients that each send ``POST /v1/messages/count_tokens`` bodies of about
4 MB, one after the other, in turn a long document, a long conversation and a long tool-use session
(:func:`big_bodies`), interleaved with the streaming load: the goal is that the loop is never held more than
50 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import functools
import json
import os
import random
import re
import shutil
import socket
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from overhead import Service, SetupError, load_average, machine, percentile, start

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / ".bench"
DOC = ROOT / "docs" / "benchmarks-reliability.md"
CLAUDE_KEY_ENV = "SOAK_CLAUDE_KEY"
MARKER = "[[soak:"
#: What every upstream answers: 48 words, so a stream has 8 text events of 6 words.
REPLY = " ".join(f"word{i:02d}" for i in range(48)) + "."
STREAM_CHUNKS = 8
_WHITESPACE_400 = "messages: final assistant content cannot end with trailing whitespace"
_CHUNKED = re.compile(rb"\r\ntransfer-encoding:\s*chunked", re.IGNORECASE)
_CONTENT_LENGTH = re.compile(rb"\r\ncontent-length:\s*(\d+)", re.IGNORECASE)
_CLOSE = re.compile(rb"\r\nconnection:\s*close", re.IGNORECASE)


# ------------------------------------------------------------------------------------------- faults


def _twice(rng: random.Random) -> int:
    return rng.choice((1, 2))


#: fault kind -> (step as the fakes' JSON, how many times the claiming upstream plays it)
FAULTS: dict[str, Callable[[random.Random], tuple[dict[str, Any], int]]] = {
    "5xx": lambda rng: ({"kind": "fault", "status": rng.choice((500, 502, 503))}, _twice(rng)),
    "429": lambda rng: ({"kind": "fault", "status": 429, "retry_after": 0.5}, _twice(rng)),
    "cut": lambda rng: ({"kind": "cut_stream", "after_events": rng.randint(2, STREAM_CHUNKS)}, 1),
    "stall": lambda rng: ({"kind": "stall_stream", "after_events": rng.randint(2, STREAM_CHUNKS), "seconds": 10}, 1),
    "malformed": lambda rng: ({"kind": "malformed_stream"}, _twice(rng)),
}


@dataclass(frozen=True, slots=True)
class Fault:
    """One injected fault, as the client chose it; ``everywhere``: every upstream plays it, every time; ``each``:
    every upstream plays it ``times`` times (instead of only the first upstream that sees it)."""

    id: str
    kind: str
    step: dict[str, Any]
    times: int
    everywhere: bool
    each: bool = False

    def marker(self) -> str:
        data = {"id": self.id, "kind": self.kind, "step": self.step, "times": self.times, "all": self.everywhere}
        if self.each:
            data["each"] = True
        return f"{MARKER}{json.dumps(data, separators=(',', ':'))}]]"


def choose_fault(rng: random.Random, request_id: str, rate: float, all_share: float) -> Fault | None:
    if rng.random() >= rate:
        return None
    kind = rng.choice(sorted(FAULTS))
    step, times = FAULTS[kind](rng)
    return Fault(request_id, kind, step, times, rng.random() < all_share)


def parse_marker(text: str) -> dict[str, Any] | None:
    at = text.find(MARKER)
    if at < 0:
        return None
    data, _ = json.JSONDecoder().raw_decode(text, at + len(MARKER))
    return data if isinstance(data, dict) else None


# ----------------------------------------------------------------------------- upstream side


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(p.get("text", "")) for p in content if isinstance(p, dict) and p.get("type") == "text")
    return ""


def continued_prefix(messages: list[dict[str, Any]]) -> str:
    """The text of the trailing assistant message(s): what a model asked to continue has already said."""
    tail: list[str] = []
    for m in reversed(messages):
        if m.get("role") != "assistant":
            break
        tail.insert(0, _text(m.get("content")))
    return "".join(tail)


def rest_of_reply(body: Mapping[str, Any]) -> str:
    """A model that continues a final assistant message: the rest of :data:`REPLY` after it (all of it when the
    prefix is not the start of REPLY, as a model that starts over would do: the client sees the repeat)."""
    messages = [m for m in body.get("messages") or () if isinstance(m, dict)]
    prefix = continued_prefix(messages)
    return REPLY[len(prefix) :] if REPLY.startswith(prefix) else REPLY


class Injector:
    """ASGI wrapper around a fake upstream (which answers :func:`rest_of_reply`): plays the fault a
    ``[[soak:...]]`` marker asks for, passed to the fake as its ``x-fake-script`` header, and, for Claude, refuses
    a final assistant message that ends in whitespace as the real API does. ``GET /soak/stats``: what it played.
    """

    def __init__(self, fake: Any, name: str, claims: Path, *, anthropic: bool) -> None:
        self.fake, self.name, self.claims, self.anthropic = fake, name, claims, anthropic
        self.played: Counter[str] = Counter()  # per fault kind, each time a fault was played
        self.owned: dict[str, int] = {}  # fault id -> times still to play, for the faults this upstream claimed
        self.counts: Counter[str] = Counter()

    def _claim(self, fault_id: str, times: int, shared: bool = True) -> bool:
        """Take the fault (``shared``: only if no other upstream took it first)."""
        if fault_id in self.owned:
            return True
        if not shared:
            self.owned[fault_id] = times
            return True
        try:
            os.close(os.open(self.claims / fault_id, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            return False
        self.owned[fault_id] = times
        return True

    def decide(self, body: Any) -> dict[str, Any] | None:
        """The step for this request (``None``: the fake's default answer, i.e. the rest of :data:`REPLY`)."""
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            return None
        messages = [m for m in body["messages"] if isinstance(m, dict)]
        prefix = continued_prefix(messages)
        if self.anthropic and prefix != prefix.rstrip():  # the real API checks this before anything else
            self.counts["rejected: trailing whitespace"] += 1
            return {"kind": "fault", "status": 400, "error_type": "invalid_request_error", "message": _WHITESPACE_400}
        if prefix:
            self.counts["continued" if REPLY.startswith(prefix) else "continued from an unknown prefix"] += 1
        user = next((_text(m.get("content")) for m in reversed(messages) if m.get("role") == "user"), "")
        marker = parse_marker(user)
        if marker is None:
            return None
        fault_id, times = str(marker["id"]), int(marker["times"])
        shared = not marker.get("each", False)
        if marker["all"] or (self._claim(fault_id, times, shared) and self.owned[fault_id] > 0):
            if not marker["all"]:
                self.owned[fault_id] -= 1
            self.played[str(marker["kind"]) + ("-all" if marker["all"] else "")] += 1
            return dict(marker["step"])
        return None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.fake(scope, receive, send)
            return
        if scope["path"] == "/soak/stats":
            payload = {"stats": self.fake.stats, "played": dict(self.played), **dict(self.counts)}
            await send(
                {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]}
            )
            await send({"type": "http.response.body", "body": json.dumps(payload).encode()})
            return
        if scope["method"] != "POST":
            await self.fake(scope, receive, send)
            return
        chunks: list[bytes] = []
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away before the body arrived
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        raw = b"".join(chunks)
        try:
            step = self.decide(json.loads(raw))
        except ValueError:
            step = None
        if step is not None:
            headers = [*scope["headers"], (b"x-fake-script", json.dumps(step).encode())]
            scope = {**scope, "headers": headers}
        replayed = False

        async def replay() -> Any:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": raw, "more_body": False}
            return await receive()

        await self.fake(scope, replay, send)


def _claims_dir() -> Path:
    return Path(os.environ["SOAK_CLAIMS"])


def openai_replica() -> Injector:
    """An open-tier replica, for ``uvicorn --factory`` (``SOAK_NAME``, ``SOAK_CLAIMS`` in the environment)."""
    from tests.fakes import FakeOpenAI

    class Continuing(FakeOpenAI):
        def _default(self, body: Mapping[str, Any]) -> tuple[str | None, list[dict[str, Any]]]:
            return rest_of_reply(body), []

    # the continuation is rest_of_reply's: the fake's own prefill handling ("continue") would apply it twice
    fake = Continuing(stream_chunks=STREAM_CHUNKS, record=False, prefill="ignore")
    return Injector(fake, os.environ["SOAK_NAME"], _claims_dir(), anthropic=False)


def anthropic_replica() -> Injector:
    """The closed-tier Claude, for ``uvicorn --factory``."""
    from tests.fakes import FakeAnthropic

    class Continuing(FakeAnthropic):
        def _default_content(self, body: Mapping[str, Any]) -> list[dict[str, Any]]:
            return [{"type": "text", "text": rest_of_reply(body)}]

    fake = Continuing(stream_chunks=STREAM_CHUNKS, record=False, prefill="ignore")  # see openai_replica
    return Injector(fake, os.environ["SOAK_NAME"], _claims_dir(), anthropic=True)


# ------------------------------------------------------------------------------------ processes


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def start_upstream(name: str, factory: str, run_dir: Path, claims: Path) -> Service:
    port = free_port()
    argv = [
        sys.executable,
        "-m",
        "uvicorn",
        "--factory",
        "--app-dir",
        str(ROOT / "benchmarks"),
        f"soak:{factory}",
        "--port",
        str(port),
        "--log-level",
        "warning",
        "--no-access-log",
        # The fake keeps the runtime it was measured on (asyncio, h11), whatever tiergate itself runs on.
        "--loop",
        "asyncio",
        "--http",
        "h11",
    ]
    env: dict[str, str | None] = {"PYTHONPATH": str(ROOT), "SOAK_NAME": name, "SOAK_CLAIMS": str(claims)}
    return start(name, argv, model="", port=port, ready="/soak/stats", run_dir=run_dir, env=env)


def gateway_config(
    upstreams: Mapping[str, Service], dispatch: Mapping[str, Any], backend_overrides: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Replicas ``r1``, ``r2`` (open, ``openai``) and, when given, ``claude`` (closed, ``anthropic``)."""
    extra = {"stall_timeout_s": 2.0, **(backend_overrides or {})}
    backends: list[dict[str, Any]] = [
        {
            "name": name,
            "tier": "open",
            "kind": "openai",
            "base_url": f"http://127.0.0.1:{s.port}/v1",
            "model": "m",
            "context_window": 32768,
            **extra,
        }
        for name, s in upstreams.items()
        if name != "claude"
    ]
    if "claude" in upstreams:
        backends.append(
            {
                "name": "claude",
                "tier": "closed",
                "kind": "anthropic",
                "model": "claude-sonnet-4-5",
                "base_url": f"http://127.0.0.1:{upstreams['claude'].port}",
                "api_key_env": CLAUDE_KEY_ENV,
                "context_window": 200000,
                **extra,
            }
        )
    return {
        "backends": backends,
        "router": {"kind": "open"},
        "dispatch": dict(dispatch),
        "ledger": {"url": "sqlite:///tiergate.db"},
    }


def start_gateway(config: dict[str, Any], run_dir: Path, name: str = "tiergate") -> Service:
    port = free_port()
    path = run_dir / f"{name}.yaml"
    path.write_text(json.dumps(config, indent=1))  # JSON is YAML
    argv = [
        sys.executable,
        "-m",
        "tiergate",
        "serve",
        "--config",
        str(path),
        "--port",
        str(port),
        "--log-level",
        "warning",
    ]
    return start(
        name, argv, model="open", port=port, ready="/readyz", run_dir=run_dir, env={CLAUDE_KEY_ENV: "sk-ant-soak"}
    )


def rss_kib(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of a process, in KiB."""
    status = Path(f"/proc/{pid}/status").read_text()
    values = {
        k: int(v.split()[0]) for k, v in (line.split(":", 1) for line in status.splitlines()) if k in ("VmRSS", "VmHWM")
    }
    return values["VmRSS"], values["VmHWM"]


# --------------------------------------------------------------------------------------- client


def chat_request(port: int, dialect: str, text: str, stream: bool = True, model: str = "open") -> bytes:
    messages = [{"role": "user", "content": text}]
    if dialect == "anthropic":
        path = "/v1/messages"
        body = {"model": model, "max_tokens": 1024, "messages": messages, "stream": stream}
        extra = "anthropic-version: 2023-06-01\r\n"
    else:
        path, extra = "/v1/chat/completions", ""
        body = {"model": model, "messages": messages, "stream": stream}
    data = json.dumps(body).encode()
    head = (
        f"POST {path} HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\ncontent-type: application/json\r\n{extra}"
        f"accept: {'text/event-stream' if stream else 'application/json'}\r\ncontent-length: {len(data)}\r\n\r\n"
    )
    return head.encode() + data


@dataclass(slots=True)
class Answer:
    status: int
    head: bytes
    body: bytes
    first: float  # perf_counter when the first ``data:`` line (or the head, without a stream) arrived
    end: float


class Connection:
    """One keep-alive HTTP/1.1 connection that reads whole answers (chunked or with a length)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None

    async def exchange(self, request: bytes) -> Answer:
        if self.reader is None or self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port, limit=1 << 20)
        reader, writer = self.reader, self.writer
        writer.write(request)
        head = await reader.readuntil(b"\r\n\r\n")
        first = time.perf_counter()
        parts: list[bytes] = []
        if _CHUNKED.search(head):
            seen = False
            while size := int((await reader.readuntil(b"\r\n")).split(b";", 1)[0], 16):
                chunk = (await reader.readexactly(size + 2))[:-2]
                if not seen and b"data:" in chunk:
                    first, seen = time.perf_counter(), True
                parts.append(chunk)
            await reader.readuntil(b"\r\n")
        elif match := _CONTENT_LENGTH.search(head):
            parts.append(await reader.readexactly(int(match.group(1))))
        if _CLOSE.search(head):
            self.close()
        return Answer(int(head[9:12]), head, b"".join(parts), first, time.perf_counter())


@dataclass(frozen=True, slots=True)
class Verdict:
    outcome: str  # ok | truncated | corrupt | failed
    reason: str = ""
    explicit: bool = True  # a failure the client was told about (status or error event)


def _lines(body: bytes) -> list[dict[str, Any] | str]:
    out: list[dict[str, Any] | str] = []
    for line in body.decode("utf-8", "replace").splitlines():
        if line.startswith("data:"):
            data = line[5:].strip()
            try:
                out.append(json.loads(data))
            except ValueError:
                out.append(data)
    return out


def judge(answer: Answer, dialect: str, expected: str = REPLY) -> Verdict:
    """Is this streamed answer complete and exactly ``expected``? See the module docstring for the outcomes."""
    if answer.status != 200:
        try:
            message = json.loads(answer.body)["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = answer.body[:80].decode("utf-8", "replace")
        return Verdict("failed", f"HTTP {answer.status}: {_short(message)}")
    text, done, error = [], False, None
    for item in _lines(answer.body):
        if item == "[DONE]":
            done = True
        elif not isinstance(item, dict):
            continue
        elif dialect == "openai":
            if "error" in item:
                error = item["error"].get("message") if isinstance(item["error"], dict) else str(item["error"])
            for choice in item.get("choices") or ():
                text.append(choice.get("delta", {}).get("content") or "")
        elif item.get("type") == "content_block_delta":
            text.append(item["delta"].get("text") or "")
        elif item.get("type") == "message_stop":
            done = True
        elif item.get("type") == "error":
            error = item.get("error", {}).get("message")
    got = "".join(text)
    if error is not None:
        return Verdict("failed", f"error event: {_short(str(error))}" + (" (and a success marker!)" if done else ""))
    if not done:
        return Verdict("failed", "ended with no success marker and no error event", explicit=False)
    if got == expected:
        return Verdict("ok")
    if expected.startswith(got):
        return Verdict("truncated", f"{len(got)} of {len(expected)} characters")
    return Verdict("corrupt", f"{len(got)} characters, expected {len(expected)}: {got[:60]!r}")


def _short(message: str) -> str:
    """An error message with the parts that vary per request (ids, numbers) blurred, to group failures by cause."""
    message = re.sub(r"\b[0-9a-f]{16,}\b", "<id>", message)
    return re.sub(r"\d+(\.\d+)?", "N", message)[:140]


@dataclass(slots=True)
class Record:
    started: float
    latency: float
    ttfb: float | None
    dialect: str
    fault: Fault | None
    verdict: Verdict


async def one_request(
    conn: Connection, port: int, request_id: str, dialect: str, fault: Fault | None, limit_s: float
) -> Record:
    text = f"Soak request {request_id}: say the usual." + (f" {fault.marker()}" if fault else "")
    payload = chat_request(port, dialect, text)
    t0 = time.perf_counter()
    try:
        async with asyncio.timeout(limit_s):
            answer = await conn.exchange(payload)
    except TimeoutError:
        conn.close()
        return Record(
            t0,
            time.perf_counter() - t0,
            None,
            dialect,
            fault,
            Verdict("failed", f"client timeout ({limit_s:g} s)", explicit=False),
        )
    except (OSError, ValueError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
        conn.close()
        return Record(
            t0,
            time.perf_counter() - t0,
            None,
            dialect,
            fault,
            Verdict("failed", f"transport: {type(exc).__name__}", explicit=False),
        )
    verdict = judge(answer, dialect)
    ttfb = answer.first - t0 if answer.status == 200 else None
    return Record(t0, answer.end - t0, ttfb, dialect, fault, verdict)


# ------------------------------------------------------------------------------ big bodies, loop lag

BIG_HEADERS = {"content-type": "application/json", "anthropic-version": "2023-06-01"}
_LAG_BUCKET = re.compile(r'^tiergate_event_loop_(lag|busy)_seconds_bucket\{le="([^"]+)"\} (\S+)$', re.MULTILINE)
_LAG_COUNT = re.compile(r"^tiergate_event_loop_(lag|busy)_seconds_count (\S+)$", re.MULTILINE)
_LAG_MAX = re.compile(r"^tiergate_event_loop_lag_max_seconds (\S+)$", re.MULTILINE)


def big_bodies(target: int = 3_900_000) -> dict[str, bytes]:
    """count_tokens bodies of about ``target`` bytes (under the default 4 MiB limit), of three shapes."""

    def fill(make: Callable[[int], dict[str, Any]]) -> bytes:
        n = 16
        while len(body := json.dumps(make(n)).encode()) < target // 4:
            n *= 2
        return json.dumps(make(n * target // len(body))).encode()  # size is about linear in n

    def document(n: int) -> dict[str, Any]:
        return {"model": "auto", "messages": [{"role": "user", "content": "Summarise this. " + "lorem ipsum " * n}]}

    def conversation(n: int) -> dict[str, Any]:
        turns = [
            {"role": ("user", "assistant")[i % 2], "content": f"turn {i}: " + "and so the talk went on " * 60}
            for i in range(n | 1)  # odd: the last turn is the user's
        ]
        return {"model": "auto", "messages": turns}

    def tool_session(n: int) -> dict[str, Any]:
        turns: list[dict[str, Any]] = [{"role": "user", "content": "Read the files."}]
        for i in range(n):
            call = {"type": "tool_use", "id": f"toolu_{i}", "name": "read", "input": {"path": f"src/f{i}.py"}}
            turns.append({"role": "assistant", "content": [{"type": "text", "text": "Reading."}, call]})
            result = {"type": "tool_result", "tool_use_id": f"toolu_{i}", "content": "def f(x):\n    return x\n" * 40}
            turns.append({"role": "user", "content": [result]})
        tools = [{"name": "read", "description": "Read a file.", "input_schema": {"type": "object"}}]
        return {"model": "auto", "messages": turns, "tools": tools}

    return {"document": fill(document), "conversation": fill(conversation), "tool session": fill(tool_session)}


def loop_lag(port: int) -> dict[str, float]:
    """The gateway's loop-lag histograms (``lag``: the timer's lateness; ``busy``: the part of it the gateway spent
    on a CPU): samples, samples over each bucket bound, and the largest lag since start."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=30).text
    counts = {kind: float(n) for kind, n in _LAG_COUNT.findall(text)}
    out = {f"{kind} samples": n for kind, n in counts.items()}
    out["max"] = float(m.group(1)) if (m := _LAG_MAX.search(text)) else float("nan")
    for kind, bound, below in _LAG_BUCKET.findall(text):
        if bound != "+Inf":
            out[f"{kind} over {float(bound) * 1000:g} ms"] = counts[kind] - float(below)
    return out


# ----------------------------------------------------------------------------------------- load


@dataclass
class Run:
    records: list[Record] = field(default_factory=list)
    rss: list[tuple[float, int]] = field(default_factory=list)  # (seconds since start, VmRSS KiB)
    marks: dict[str, tuple[int, int]] = field(default_factory=dict)  # name -> (VmRSS, VmHWM) KiB
    measured_from: float = 0.0
    measured_to: float = 0.0
    drain_s: float = 0.0
    gateway_cpu_s: float = 0.0
    lag: dict[str, dict[str, float]] = field(default_factory=dict)  # mark -> loop-lag metrics (loop_lag())
    big: list[tuple[str, int, float]] = field(default_factory=list)  # (shape, status, seconds) of big bodies


async def soak(gateway: Service, args: argparse.Namespace) -> Run:
    assert gateway.process is not None
    pid, port, run = gateway.process.pid, gateway.port, Run()
    rng = random.Random(args.seed)
    t0 = time.perf_counter()
    run.measured_from = t0 + args.warmup
    run.measured_to = run.measured_from + args.duration

    async def client(index: int) -> None:
        conn, crng, seq = Connection(port), random.Random(rng.random()), 0
        await asyncio.sleep(index * 0.002)  # stagger the first connections a little
        while time.perf_counter() < run.measured_to:
            seq += 1
            request_id = f"c{index}-{seq}"
            dialect = "anthropic" if crng.random() < args.anthropic_share else "openai"
            fault = choose_fault(crng, request_id, args.fault_rate, args.all_share)
            record = await one_request(conn, port, request_id, dialect, fault, args.request_timeout)
            run.records.append(record)
            if record.verdict.outcome == "failed" and not record.verdict.explicit:
                await asyncio.sleep(0.05)  # a broken connection must not spin
        conn.close()

    async def sampler() -> None:
        while True:
            run.rss.append((time.perf_counter() - t0, rss_kib(pid)[0]))
            await asyncio.sleep(1.0)

    async def big_sender(index: int) -> None:
        bodies = big_bodies()
        shapes = list(bodies)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=args.request_timeout) as http:
            n = index
            while time.perf_counter() < run.measured_to:
                shape = shapes[n % len(shapes)]
                n += 1
                started = time.perf_counter()
                try:
                    resp = await http.post("/v1/messages/count_tokens", content=bodies[shape], headers=BIG_HEADERS)
                    status = resp.status_code
                except httpx.HTTPError:
                    status = 0
                if started >= run.measured_from:
                    run.big.append((shape, status, time.perf_counter() - started))

    async def mark(name: str, at: float) -> None:
        await asyncio.sleep(max(0.0, at - time.perf_counter()))
        run.lag[name] = await asyncio.to_thread(loop_lag, port)
        run.marks[name] = rss_kib(pid)
        if name == "after warm-up":
            run.gateway_cpu_s = -gateway.cpu_seconds()
        else:
            run.gateway_cpu_s += gateway.cpu_seconds()

    watcher = asyncio.create_task(sampler())
    marks = [
        asyncio.create_task(mark("after warm-up", run.measured_from)),
        asyncio.create_task(mark("end of the run", run.measured_to)),
    ]
    progress = asyncio.create_task(_progress(run, t0))
    big = [big_sender(i) for i in range(args.big_count_tokens)]
    await asyncio.gather(*(client(i) for i in range(args.clients)), *big)
    run.drain_s = time.perf_counter() - run.measured_to
    await asyncio.gather(*marks)
    progress.cancel()
    await asyncio.sleep(3.0)  # let the ledger flush and in-flight work settle
    run.marks["idle, 3 s after the run"] = rss_kib(pid)
    watcher.cancel()
    return run


async def _progress(run: Run, t0: float) -> None:
    while True:
        await asyncio.sleep(10.0)
        counts = Counter(r.verdict.outcome for r in run.records)
        print(
            f"  t={time.perf_counter() - t0:5.0f} s  answers {len(run.records):6d}  "
            + "  ".join(f"{k} {v}" for k, v in sorted(counts.items())),
            flush=True,
        )


# -------------------------------------------------------------------------------------- results


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:,.0f}"


def summarize(run: Run, args: argparse.Namespace) -> dict[str, Any]:
    measured = [r for r in run.records if r.started >= run.measured_from]
    outcomes = Counter(r.verdict.outcome for r in measured)
    failures = [r for r in measured if r.verdict.outcome == "failed"]
    avoidable = [r for r in failures if not (r.fault and r.fault.everywhere)]
    unavoidable = [r for r in failures if r.fault and r.fault.everywhere]
    ok = [r for r in measured if r.verdict.outcome == "ok"]
    clean = [r for r in ok if r.fault is None]
    by_fault: dict[str, Counter[str]] = {}
    for r in measured:
        key = (
            "none"
            if r.fault is None
            else r.fault.kind + (" (every upstream)" if r.fault.everywhere else f" (one upstream, x{r.fault.times})")
        )
        by_fault.setdefault(key, Counter())[r.verdict.outcome] += 1
    reasons = Counter(
        (
            "unavoidable" if r.fault and r.fault.everywhere else "avoidable",
            r.fault.kind if r.fault else "none",
            r.verdict.reason,
        )
        for r in failures
    )
    bad_success = Counter(
        (r.verdict.outcome, r.fault.kind if r.fault else "none", r.verdict.reason)
        for r in measured
        if r.verdict.outcome in ("truncated", "corrupt")
    )
    warm, end = run.marks.get("after warm-up"), run.marks.get("end of the run")
    growth = (end[0] - warm[0]) / warm[0] if warm and end else float("nan")
    return {
        "measured": measured,
        "outcomes": outcomes,
        "failures": failures,
        "avoidable": avoidable,
        "unavoidable": unavoidable,
        "ok": ok,
        "clean": clean,
        "by_fault": by_fault,
        "reasons": reasons,
        "bad_success": bad_success,
        "growth": growth,
        "faulted": sum(1 for r in measured if r.fault),
        "rps": len(ok) / args.duration,
    }


def _goal(met: bool) -> str:
    return "**met**" if met else "**not met**"


def _latency_row(name: str, records: list[Record]) -> str:
    lat = [r.latency for r in records]
    ttfb = [r.ttfb for r in records if r.ttfb is not None]
    if not lat:
        return f"| {name} | 0 | | | | | | |"
    return (
        f"| {name} | {len(lat):,} | {_ms(percentile(ttfb, 50))} | {_ms(percentile(ttfb, 99))} | "
        f"{_ms(percentile(lat, 50))} | {_ms(percentile(lat, 90))} | {_ms(percentile(lat, 99))} | "
        f"{_ms(max(lat))} |"
    )


def render(
    run: Run,
    s: dict[str, Any],
    info: dict[str, str],
    args: argparse.Namespace,
    upstream_stats: dict[str, Any],
    log_counts: Counter[str],
) -> str:
    measured, outcomes = s["measured"], s["outcomes"]
    warm, end = run.marks.get("after warm-up"), run.marks.get("end of the run")
    cpu_ms = 1000 * run.gateway_cpu_s / max(1, len(measured))
    truncated = outcomes["truncated"] + outcomes["corrupt"]
    lines = [
        "## Soak: concurrent streaming clients with injected faults"
        + ("" if args.breaker_failures is None else f" (`breaker_failures: {args.breaker_failures}`)"),
        "",
        "Generated by `python benchmarks/soak.py`"
        + (f" `{' '.join(sys.argv[1:])}`" if sys.argv[1:] else "")
        + "; the method is in that file's docstring.",
        "",
        "### Run conditions",
        "",
        *(f"- **{k}**: {v}" for k, v in info.items()),
        "",
        "### Against the goals",
        "",
        "| goal | measured | |",
        "|---|---|---|",
        f"| zero avoidable failures | {len(s['avoidable']):,} avoidable failures in {len(measured):,} requests | "
        f"{_goal(not s['avoidable'])} |",
        f"| zero truncated-as-success streams | {outcomes['truncated']:,} truncated, {outcomes['corrupt']:,} "
        f"otherwise wrong with a success marker | {_goal(truncated == 0)} |",
        f"| gateway RSS at the end within 10% of after warm-up | {warm[0] / 1024 if warm else 0:.1f} MiB -> "
        f"{end[0] / 1024 if end else 0:.1f} MiB ({s['growth']:+.1%}) | {_goal(abs(s['growth']) <= 0.10)} |",
        *_lag_goal(run),
        "",
        *_lag_section(run),
        "### Counts (measured window only)",
        "",
        "| requests | ok | failed, avoidable | failed, unavoidable (fault on every upstream) | truncated as success "
        "| wrong text as success | with a fault | ok/s | gateway CPU ms per request |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        f"| {len(measured):,} | {outcomes['ok']:,} | {len(s['avoidable']):,} | {len(s['unavoidable']):,} | "
        f"{outcomes['truncated']:,} | {outcomes['corrupt']:,} | {s['faulted']:,} "
        f"({s['faulted'] / max(1, len(measured)):.1%}) | {s['rps']:,.1f} | {cpu_ms:.2f} |",
        "",
        "### Outcome by injected fault",
        "",
        "| fault | requests | ok | failed | truncated | wrong text |",
        "|---|---:|---:|---:|---:|---:|",
        *(
            f"| {k} | {sum(c.values()):,} | {c['ok']:,} | {c['failed']:,} | {c['truncated']:,} | {c['corrupt']:,} |"
            for k, c in sorted(s["by_fault"].items())
        ),
        "",
    ]
    if s["reasons"]:
        lines += ["### Failures by cause", "", "| class | fault | what the client got | count |", "|---|---|---|---:|"]
        lines += [f"| {cls} | {kind} | {reason} | {n:,} |" for (cls, kind, reason), n in s["reasons"].most_common(25)]
        lines.append("")
    if s["bad_success"]:
        lines += [
            "### Answers with a success marker but the wrong text",
            "",
            "| outcome | fault | detail | count |",
            "|---|---|---|---:|",
        ]
        lines += [f"| {o} | {k} | {d} | {n:,} |" for (o, k, d), n in s["bad_success"].most_common(15)]
        lines.append("")
    lines += [
        "### Latency (ms, measured window; TTFB = first `data:` line)",
        "",
        "| requests | n | TTFB p50 | TTFB p99 | total p50 | total p90 | total p99 | max |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
        _latency_row("ok, no fault", s["clean"]),
        _latency_row("ok, with a fault", [r for r in s["ok"] if r.fault]),
        *(
            _latency_row(
                f"ok, {kind} (one upstream)",
                [r for r in s["ok"] if r.fault and r.fault.kind == kind and not r.fault.everywhere],
            )
            for kind in sorted(FAULTS)
        ),
        _latency_row("failed", s["failures"]),
        "",
        "### Gateway memory (VmRSS)",
        "",
        "| when | VmRSS MiB | VmHWM (peak) MiB |",
        "|---|---:|---:|",
    ]
    lines += [f"| {k} | {v[0] / 1024:.1f} | {v[1] / 1024:.1f} |" for k, v in run.marks.items()]
    during = [kib for t, kib in run.rss if t >= args.warmup]
    if during:
        lines += [
            "",
            f"Sampled every second during the measured window: min {min(during) / 1024:.1f} MiB, median "
            f"{statistics.median(during) / 1024:.1f} MiB, max {max(during) / 1024:.1f} MiB; every 10 s: "
            + ", ".join(f"{kib / 1024:.1f}" for _, kib in run.rss[::10])
            + " MiB (from the start, warm-up included).",
        ]
    lines += [
        "",
        "### What the upstreams and the gateway saw",
        "",
        "| upstream | answers by outcome (the fake's own count) | faults played | continuations served | other |",
        "|---|---|---|---:|---|",
    ]
    for name, st in upstream_stats.items():
        other = {k: v for k, v in st.items() if k not in ("stats", "played", "continued")}
        lines.append(
            f"| {name} | {_kv(st.get('stats', {}))} | {_kv(st.get('played', {}))} | "
            f"{st.get('continued', 0):,} | {_kv(other)} |"
        )
    lines += [
        "",
        "Gateway log (warning level), whole run including warm-up: "
        + (", ".join(f"{k}: {v:,}" for k, v in sorted(log_counts.items())) or "nothing")
        + ".",
    ]
    lines += [
        "",
        f"Clients still in flight at the end of the window were waited for ({run.drain_s:.1f} s); "
        "requests started in the warm-up are not counted.",
    ]
    return "\n".join(lines) + "\n"


def _lag_window(run: Run) -> dict[str, float]:
    start, end = run.lag.get("after warm-up"), run.lag.get("end of the run")
    if not start or not end:
        return {}
    return {k: end[k] - start.get(k, 0.0) for k in end if k != "max"} | {"max": end["max"]}


def _lag_goal(run: Run) -> list[str]:
    lag = _lag_window(run)
    if not lag:
        return []
    over, busy = lag.get("lag over 50 ms", float("nan")), lag.get("busy over 50 ms", float("nan"))
    big = f", with {len(run.big):,} count_tokens bodies of about 4 MB interleaved" if run.big else ""
    return [
        f"| event loop never held more than 50 ms{big} | {busy:,.0f} of {lag['busy samples']:,.0f} samples over 50 ms "
        f"by the gateway's own work (lag while it was on a CPU); {over:,.0f} with the time it waited for a CPU "
        f"(largest lag since start {lag['max'] * 1000:.0f} ms) | {_goal(busy == 0)} |"
    ]


def _lag_section(run: Run) -> list[str]:
    lag = _lag_window(run)
    if not lag:
        return []
    bounds = [k.removeprefix("lag ") for k in lag if k.startswith("lag over ")]
    lines = [
        "### Event loop (a timer every 10 ms, measured window)",
        "",
        "*lag*: how late the timer fired; *on a CPU*: the part of that lag the gateway process spent on a CPU "
        "(its own work holding the loop), the rest being time it waited for a CPU on this shared machine.",
        "",
        "| | samples | " + " | ".join(bounds) + " |",
        "|---|---:|" + "---:|" * len(bounds),
    ]
    for kind, name in (("lag", "lag"), ("busy", "on a CPU")):
        cells = " | ".join(f"{lag.get(f'{kind} {b}', float('nan')):,.0f}" for b in bounds)
        lines.append(f"| {name} | {lag.get(f'{kind} samples', float('nan')):,.0f} | {cells} |")
    lines += ["", f"Largest lag since the gateway started: {lag['max'] * 1000:.1f} ms.", ""]
    if run.big:
        lines += ["| big count_tokens body | sent | statuses | p50 s | max s |", "|---|---:|---|---:|---:|"]
        for shape in sorted({b[0] for b in run.big}):
            mine = [b for b in run.big if b[0] == shape]
            statuses = ", ".join(f"{k}: {v}" for k, v in sorted(Counter(b[1] for b in mine).items()))
            secs = [b[2] for b in mine]
            lines.append(f"| {shape} | {len(mine):,} | {statuses} | {statistics.median(secs):.2f} | {max(secs):.2f} |")
        lines.append("")
    return lines


def _kv(d: Mapping[str, Any]) -> str:
    return ", ".join(f"{k} {v:,}" if isinstance(v, int) else f"{k} {v}" for k, v in sorted(d.items())) or "-"


LOG_PATTERNS = {
    "circuit opened": re.compile(r"circuit for backend (\S+) opened"),
    "stream continued elsewhere": re.compile(r"stream from (\S+) broke after"),
    "stream failed after bytes were sent": re.compile(r"stream from (\S+) failed after bytes"),
    "backend marked unhealthy": re.compile(r"backend (\S+) is now unhealthy"),
    "unexpected backend error": re.compile(r"backend (\S+) raised an unexpected error"),
    "traceback": re.compile(r"^Traceback"),
}


def scan_log(path: Path) -> Counter[str]:
    counts: Counter[str] = Counter()
    for line in path.read_text(errors="replace").splitlines():
        for what, pattern in LOG_PATTERNS.items():
            if m := pattern.search(line):
                counts[what + (f" ({m.group(1)})" if m.groups() else "")] += 1
    return counts


def write_section(path: Path, name: str, text: str) -> None:
    """Put ``text`` between this section's markers in ``path``, leaving the other sections as they are."""
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    doc = (
        path.read_text()
        if path.exists()
        else (
            "# Reliability benchmarks\n\nGenerated by `benchmarks/soak.py` and `benchmarks/failover_overhead.py`; each "
            "rewrites only its own section. How tiergate retries, fails over and continues streams is in "
            "[reliability.md](reliability.md).\n\n<!-- soak:begin -->\n<!-- soak:end -->\n\n"
            "<!-- failover:begin -->\n<!-- failover:end -->\n"
        )
    )
    if begin not in doc:
        doc = doc.rstrip("\n") + f"\n\n{begin}\n{end}\n"
    head, rest = doc.split(begin, 1)
    _, tail = rest.split(end, 1)
    path.write_text(f"{head}{begin}\n{text.rstrip()}\n{end}{tail}")


def run_conditions(args_line: str) -> dict[str, str]:
    info = machine()
    info["Date"] = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    info["Load before"] = load_average()
    info["Command"] = args_line
    return info


@contextlib.contextmanager
def services(starters: Sequence[Callable[[], Service]]) -> Any:
    """Start each service in turn; stop all of them at the end, the last started first."""
    with contextlib.ExitStack() as stack:
        started = []
        for starter in starters:
            service = starter()
            stack.callback(service.stop)
            started.append(service)
        yield started


def fetch_json(port: int, path: str) -> Any:
    try:
        return httpx.get(f"http://127.0.0.1:{port}{path}", timeout=10).json()
    except (httpx.HTTPError, ValueError) as exc:
        return {"error": str(exc)}


def prepare_run_dir(name: str) -> tuple[Path, Path]:
    run_dir = BENCH / name
    shutil.rmtree(run_dir, ignore_errors=True)
    claims = run_dir / "claims"
    claims.mkdir(parents=True)
    return run_dir, claims


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--clients", type=int, default=500)
    parser.add_argument("--duration", type=float, default=60.0, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=10.0, help="seconds of the same load before measuring")
    parser.add_argument("--fault-rate", type=float, default=0.05, help="share of requests with an injected fault")
    parser.add_argument(
        "--all-share",
        type=float,
        default=0.10,
        help="share of the faults played by every upstream (unavoidable failures)",
    )
    parser.add_argument("--anthropic-share", type=float, default=0.15, help="share of requests in Anthropic's dialect")
    parser.add_argument("--no-claude", action="store_true", help="no closed tier: the two open replicas only")
    parser.add_argument("--request-timeout", type=float, default=120.0)
    parser.add_argument(
        "--breaker-failures",
        type=int,
        default=None,
        help="override every backend's breaker_failures (a huge value keeps circuits closed)",
    )
    parser.add_argument(
        "--big-count-tokens", type=int, default=0, help="clients sending ~4 MB count_tokens bodies, interleaved"
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, default=DOC)
    parser.add_argument("--section", default="soak", help="the section of --out to (re)write")
    args = parser.parse_args()

    run_dir, claims = prepare_run_dir("soak-run")
    info = run_conditions("python benchmarks/soak.py " + " ".join(sys.argv[1:]))
    names = [("r1", "openai_replica"), ("r2", "openai_replica")] + (
        [] if args.no_claude else [("claude", "anthropic_replica")]
    )
    starters = [functools.partial(start_upstream, n, f, run_dir, claims) for n, f in names]
    try:
        with services(starters) as upstreams:
            by_name = {s.name: s for s in upstreams}
            overrides = {} if args.breaker_failures is None else {"breaker_failures": args.breaker_failures}
            config = gateway_config(by_name, {"seed": args.seed}, overrides)
            gateway = start_gateway(config, run_dir)
            try:
                print(
                    f"soak: {args.clients} clients, {args.warmup:g} s warm-up + {args.duration:g} s, "
                    f"fault rate {args.fault_rate:.0%}; logs in {run_dir}",
                    flush=True,
                )
                run = asyncio.run(soak(gateway, args))
                info["Load after"] = load_average()
                alive = gateway.alive()
                stats = {s.name: fetch_json(s.port, "/soak/stats") for s in upstreams}
            finally:
                gateway.stop()
    except SetupError as exc:
        sys.exit(f"soak: setup failed: {exc}")
    info["Gateway"] = (
        "`python -m tiergate serve --log-level warning`: replicas r1, r2 (open, `openai`)"
        + ("" if args.no_claude else " and claude (closed, `anthropic`)")
        + "; `stall_timeout_s: 2`"
        + ("" if args.breaker_failures is None else f", `breaker_failures: {args.breaker_failures}`")
        + ", the rest of dispatch and breaker settings at their defaults, ledger in SQLite"
        + ("" if alive else "; **the gateway process died during the run**")
    )
    info["Load"] = (
        f"{args.clients} clients, {args.warmup:g} s warm-up + {args.duration:g} s measured, fault rate "
        f"{args.fault_rate:.0%} ({args.all_share:.0%} of faults on every upstream), "
        f"{args.anthropic_share:.0%} of requests in Anthropic's dialect"
        + (f", {args.big_count_tokens} clients sending ~4 MB count_tokens bodies" if args.big_count_tokens else "")
    )
    s = summarize(run, args)
    text = render(run, s, info, args, stats, scan_log(gateway.log))
    print(text)
    write_section(args.out, args.section, text)
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
