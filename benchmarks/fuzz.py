"""Fuzz: ten thousand hostile requests and more against a live gateway; no client input may become a 5xx or an
outage.

    python benchmarks/fuzz.py [--requests 10000] [--schemathesis 150] [--embedded-share 0.005] [--no-embedded]
                              [--out docs/benchmarks-fuzz.md]

**Parties.** The fake upstreams of ``tests/fakes`` on loopback, in this process: ``FakeOpenAI`` as ``vllm``
(open tier) and ``FakeAnthropic`` as ``claude`` (closed tier), faithful enough to reject what the real APIs
reject; the embedded SmolLM2 model as ``local`` (open tier, unless ``--no-embedded``); and tiergate in its own
process (``python -m tiergate serve``) with every breaker at its default (five counted failures in 30 s open
a circuit), ``router: {kind: rules}``, the ledger in SQLite.

**Requests.** Two sources, one after the other:

- the hostile suite of ``tests/support/hostile.py``, drawn by hypothesis: deep nesting, huge strings, lone
  surrogates, wrong types, unknown fields, bad tool schemas, bad images, odd unicode, wrong content types,
  truncated JSON, random bytes, numbers JSON cannot carry, duplicate keys, broken semantics, wrong methods and
  paths, odd headers, and valid requests; a quarter of them streaming; ``--embedded-share`` of them for the
  embedded model, the rest for ``auto``, ``open``, ``closed``, ``vllm`` or ``claude``;
- schemathesis, from the gateway's own ``/openapi.json``: ``--schemathesis`` cases per operation and
  generation mode (valid and invalid bodies).

**Checks.** Every answer: a status >= 500 is a failure; an error that is not in the caller's envelope, or
whose message names an exception class, is counted; no answer within ``--timeout`` (60 s; 180 s for the
embedded model) is a hang. The gateway: its process alive throughout (checked every 100 requests), every
``/readyz`` polled along the way (every 100 requests) with each circuit's state, the log's ``circuit for
backend ... opened`` lines and tracebacks, and at the end a good request served by each backend.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import re
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from overhead import Service, SetupError, load_average, machine, start

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.fakes import FakeAnthropic, FakeOpenAI  # noqa: E402
from tests.support.hostile import JSON_HEADERS, Hostile, hostile_requests  # noqa: E402
from tests.support.servers import free_port, serve_app  # noqa: E402

BENCH = ROOT / ".bench" / "fuzz"
DOC = ROOT / "docs" / "benchmarks-fuzz.md"
CLAUDE_KEY_ENV = "FUZZ_CLAUDE_KEY"
CLASS_NAME = re.compile(r"\b[A-Z][A-Za-z]*(?:Error|Exception)\b")
CIRCUIT_OPENED = re.compile(r"circuit for backend (\S+) opened")
CHECK_EVERY = 100
EMBEDDED = {"n_threads": 2, "default_max_tokens": 16, "n_ctx": 2048}
ALL = list(HealthCheck)


@dataclass
class Tally:
    sent: int = 0
    by_source: Counter[str] = field(default_factory=Counter)
    statuses: Counter[int] = field(default_factory=Counter)
    by_family: dict[str, Counter[str]] = field(default_factory=dict)
    server_errors: list[str] = field(default_factory=list)
    envelope: list[str] = field(default_factory=list)
    hangs: list[str] = field(default_factory=list)
    transport: list[str] = field(default_factory=list)
    circuits_seen_open: Counter[str] = field(default_factory=Counter)
    not_ready: int = 0
    polls: int = 0
    dead_at: int | None = None
    seconds: float = 0.0

    def record(self, source: str, family: str, status: int | str, what: str) -> None:
        self.sent += 1
        self.by_source[source] += 1
        outcome = str(status) if isinstance(status, int) else status
        self.by_family.setdefault(family, Counter())[outcome[0] + "xx" if outcome[0].isdigit() else outcome] += 1
        if isinstance(status, int):
            self.statuses[status] += 1
            if status >= 500:
                self.server_errors.append(f"{status} {what}")


def envelope_problem(path: str, resp: httpx.Response) -> str | None:
    """What is wrong with an error answer's envelope (OpenAI's, or Anthropic's under /v1/messages), if anything."""
    try:
        body = resp.json()
    except ValueError:
        return f"not JSON: {resp.text[:80]!r}"
    err = body.get("error") if isinstance(body, dict) else None
    if not isinstance(err, dict):
        return f"no error object: {resp.text[:120]!r}"
    wanted = {"type", "message"} if path.startswith("/v1/messages") else {"message", "type", "param", "code"}
    if path.startswith("/v1/messages") and body.get("type") != "error":
        return f"not Anthropic's envelope: {resp.text[:120]!r}"
    if not set(err) >= wanted:
        return f"missing {sorted(wanted - set(err))}: {resp.text[:120]!r}"
    message = str(err.get("message"))
    return f"names an exception class: {message[:120]!r}" if CLASS_NAME.search(message) else None


class Fuzzer:
    def __init__(self, gateway: Service, args: argparse.Namespace) -> None:
        self.gateway, self.args, self.tally = gateway, args, Tally()
        self.base = f"http://127.0.0.1:{gateway.port}"
        self.http = httpx.Client(timeout=args.timeout)

    def send(self, source: str, family: str, method: str, path: str, body: bytes, headers: Any, model: str) -> None:
        timeout = self.args.timeout * (3 if model == "local" else 1)
        what = f"{family}: {method} {path} {body[:200]!r}"
        try:
            resp = self.http.request(method, self.base + path, content=body, headers=headers, timeout=timeout)
        except httpx.TimeoutException:
            self.tally.hangs.append(what)
            self.tally.record(source, family, "hang", what)
        except httpx.HTTPError as exc:
            self.tally.transport.append(f"{type(exc).__name__}: {what}")
            self.tally.record(source, family, "transport error", what)
        else:
            self.tally.record(source, family, resp.status_code, f"{what} -> {resp.text[:300]}")
            problem = envelope_problem(path, resp) if resp.status_code >= 400 and path.startswith("/v1/") else None
            if problem is not None:
                self.tally.envelope.append(f"{what} -> {resp.status_code}: {problem}")
        if self.tally.sent % CHECK_EVERY == 0:
            self.check()
        if self.tally.sent % 1000 == 0:
            print(f"  {self.tally.sent:,} requests, {len(self.tally.server_errors)} >= 500", flush=True)

    def check(self) -> None:
        """Is the gateway alive, and which circuits are open now?"""
        if not self.gateway.alive():
            if self.tally.dead_at is None:
                self.tally.dead_at = self.tally.sent
            return
        self.tally.polls += 1
        try:
            ready = self.http.get(self.base + "/readyz", timeout=30)
        except httpx.HTTPError:
            self.tally.not_ready += 1
            return
        if ready.status_code != 200:
            self.tally.not_ready += 1
        for name, backend in ready.json().get("backends", {}).items():
            if backend.get("circuit") != "closed":
                self.tally.circuits_seen_open[name] += 1

    def hostile(self, n: int, models: st.SearchStrategy[str]) -> None:
        @given(request=hostile_requests(models))
        @settings(
            max_examples=n,
            deadline=None,
            database=None,
            phases=[Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        def one(request: Hostile) -> None:
            self.send("hostile suite", request.family.split(" (")[0], request.method, request.path, request.body,
                      request.wire_headers(), request.model)  # fmt: skip

        one()

    def schemathesis(self, per_operation: int) -> None:
        import schemathesis
        from schemathesis import GenerationMode
        from schemathesis.core.result import Err

        document = self.http.get(self.base + "/openapi.json").json()
        for name in ("OARequest", "ARequest", "ACountTokensRequest"):
            model = document["components"]["schemas"][name]["properties"]["model"]
            model["enum"] = [m for m in model["examples"] if m != "local"]  # the embedded share is the suite's
        schema = schemathesis.openapi.from_dict(document)
        for result in schema.get_all_operations():
            if isinstance(result, Err):
                raise SetupError(f"/openapi.json: an operation schemathesis cannot read: {result.err()}")
            operation = result.ok()
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                self._cases(operation, mode, per_operation)

    def _cases(self, operation: Any, mode: Any, n: int) -> None:
        family = f"schemathesis {operation.method.upper()} {operation.path} ({mode.value})"

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(max_examples=n, deadline=None, database=None, phases=[Phase.generate], suppress_health_check=ALL)
        def one(case: Any) -> None:
            kwargs = case.as_transport_kwargs(base_url=self.base)
            body = kwargs.get("data") or kwargs.get("content")
            if body is None and "json" in kwargs:
                body = json.dumps(kwargs["json"]).encode()
            body = body.encode() if isinstance(body, str) else (body or b"")
            headers = {**JSON_HEADERS, **{k: str(v) for k, v in (kwargs.get("headers") or {}).items()}}
            self.send("schemathesis", family, case.method.upper(), case.formatted_path, body, headers, "")

        with contextlib.suppress(Unsatisfiable):  # no invalid input exists for an operation without a body
            one()

    def finish(self) -> dict[str, Any]:
        self.check()
        good: dict[str, int | str] = {}
        for model in self.args.models_at_end:
            body = {"model": model, "max_tokens": 4, "messages": [{"role": "user", "content": "Say hi."}]}
            try:
                resp = self.http.post(self.base + "/v1/messages", json=body, headers=JSON_HEADERS, timeout=180)
                good[model] = resp.status_code
            except httpx.HTTPError as exc:
                good[model] = type(exc).__name__
        health = "down"
        with contextlib.suppress(httpx.HTTPError):
            health = str(self.http.get(self.base + "/healthz", timeout=10).status_code)
        return {"good": good, "healthz": health}


@contextlib.contextmanager
def gateway_for(args: argparse.Namespace) -> Iterator[Service]:
    with serve_app(FakeOpenAI(models=["fake-llama-8b"])) as vllm, serve_app(FakeAnthropic(api_key="sk-fuzz")) as claude:
        backends: list[dict[str, Any]] = [
            {"name": "vllm", "tier": "open", "kind": "openai", "base_url": vllm + "/v1", "model": "fake-llama-8b"},
            {"name": "claude", "tier": "closed", "kind": "anthropic", "base_url": claude, "model": "claude-sonnet-4-5",
             "api_key_env": CLAUDE_KEY_ENV},
        ]  # fmt: skip
        if not args.no_embedded:
            # Short answers and a 2,048-token window (a longer prompt is a quick 400): the fuzz is about input, not
            # about how long a small shared CPU takes over a long prompt.
            backends.append({"name": "local", "tier": "open", "kind": "embedded", **EMBEDDED})
        config = {"backends": backends, "router": {"kind": "rules"}, "ledger": {"url": "sqlite:///fuzz.db"}}
        BENCH.mkdir(parents=True, exist_ok=True)
        (BENCH / "fuzz.db").unlink(missing_ok=True)
        path = BENCH / "tiergate.yaml"
        path.write_text(json.dumps(config, indent=1))
        port = free_port()
        argv = [sys.executable, "-m", "tiergate", "serve", "--config", str(path), "--port", str(port),
                "--log-level", "warning"]  # fmt: skip
        gateway = start("tiergate", argv, model="", port=port, ready="/readyz", run_dir=BENCH,
                        env={CLAUDE_KEY_ENV: "sk-fuzz"})  # fmt: skip
        try:
            yield gateway
        finally:
            gateway.stop()


def scan_log(path: Path) -> dict[str, Any]:
    text = path.read_text(errors="replace")
    return {
        "circuit openings": Counter(m.group(1) for m in CIRCUIT_OPENED.finditer(text)),
        "tracebacks": text.count("Traceback (most recent call last)"),
        "failed inside the gateway": text.count("failed inside the gateway"),
        "unexpected backend errors": text.count("raised an unexpected error"),
    }


def _goal(met: bool) -> str:
    return "**met**" if met else "**not met**"


TITLE = "# Fuzzing the gateway: hostile client input"
INTRO = (
    "Generated by `python benchmarks/fuzz.py` (each run rewrites its own `--section`); the method is in that "
    "file's docstring. The same hostile suite runs, bounded, in `tests/api/test_fuzz.py`, and schemathesis in "
    "`tests/api/test_openapi.py`."
)


def render(t: Tally, log: dict[str, Any], end: dict[str, Any], info: dict[str, str], section: str) -> str:
    openings = sum(log["circuit openings"].values())
    good_ok = all(v == 200 for v in end["good"].values())
    lines = [
        f"## Run `{section}`",
        "",
        "### Run conditions",
        "",
        *(f"- **{k}**: {v}" for k, v in info.items()),
        "",
        "### Against the goals",
        "",
        "| goal | measured | |",
        "|---|---|---|",
        f"| >= 10,000 requests | {t.sent:,} ({', '.join(f'{k} {v:,}' for k, v in t.by_source.items())}) in "
        f"{t.seconds:,.0f} s | {_goal(t.sent >= 10_000)} |",
        f"| 0 responses >= 500 | {len(t.server_errors):,} | {_goal(not t.server_errors)} |",
        f"| 0 circuit openings | {openings} in the gateway's log ({dict(log['circuit openings']) or 'none'}); "
        f"a circuit not closed in {sum(t.circuits_seen_open.values())} of {t.polls} `/readyz` polls | "
        f"{_goal(openings == 0 and not t.circuits_seen_open)} |",
        f"| 0 hangs (no answer within the timeout) | {len(t.hangs):,} | {_goal(not t.hangs)} |",
        f"| the server alive throughout | process "
        f"{'alive to the end' if t.dead_at is None else f'dead after {t.dead_at:,} requests'}; `/readyz` not "
        f"ready in {t.not_ready} of {t.polls} polls; `/healthz` {end['healthz']} at the end; a good request per "
        f"backend at the end: {end['good']} | {_goal(t.dead_at is None and not t.not_ready and good_ok)} |",
        "",
        "Also: errors outside the caller's envelope or naming an exception class: "
        f"{len(t.envelope):,}; transport errors (connection reset, ...): {len(t.transport):,}; the gateway's log: "
        f"{log['tracebacks']} tracebacks, {log['failed inside the gateway']} 'failed inside the gateway', "
        f"{log['unexpected backend errors']} unexpected backend errors.",
        "",
        "### Statuses",
        "",
        "| status | count |",
        "|---:|---:|",
        *(f"| {k} | {v:,} |" for k, v in sorted(t.statuses.items())),
        "",
        "### By family",
        "",
        "| family | requests | outcomes |",
        "|---|---:|---|",
        *(
            f"| {family} | {sum(c.values()):,} | {', '.join(f'{k}: {v:,}' for k, v in sorted(c.items()))} |"
            for family, c in sorted(t.by_family.items())
        ),
        "",
    ]
    for title, items in (
        ("Responses >= 500", t.server_errors),
        ("Hangs", t.hangs),
        ("Envelope problems", t.envelope),
        ("Transport errors", t.transport),
    ):
        if items:
            lines += [f"### {title} (first 10 of {len(items):,})", "", *(f"- `{i[:400]}`" for i in items[:10]), ""]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--requests", type=int, default=10_000, help="requests of the hostile suite")
    parser.add_argument("--schemathesis", type=int, default=150, help="cases per operation and generation mode")
    parser.add_argument("--embedded-share", type=float, default=0.005, help="share of the suite for the embedded model")
    parser.add_argument("--no-embedded", action="store_true", help="the two fakes only")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per request (x3 for the embedded model)")
    parser.add_argument("--out", type=Path, default=DOC)
    parser.add_argument("--section", default="fuzz", help="the section of --out to (re)write")
    args = parser.parse_args()
    args.models_at_end = ["vllm", "claude"] + ([] if args.no_embedded else ["local"])

    os.environ.setdefault(CLAUDE_KEY_ENV, "sk-fuzz")
    info = machine()
    info["Date"] = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    info["Load before"] = load_average()
    info["Command"] = "python benchmarks/fuzz.py " + " ".join(sys.argv[1:])
    share = 0 if args.no_embedded else int(args.embedded_share * 1000)
    models = st.integers(0, 999).flatmap(
        lambda n: st.just("local") if n < share else st.sampled_from(["auto", "open", "closed", "vllm", "claude"])
    )
    try:
        with gateway_for(args) as gateway:
            fuzzer = Fuzzer(gateway, args)
            started = time.perf_counter()
            print(f"fuzz: {args.requests:,} hostile requests, then schemathesis; logs in {BENCH}", flush=True)
            fuzzer.hostile(args.requests, models)
            print(f"  hostile suite done: {fuzzer.tally.sent:,} requests", flush=True)
            if args.schemathesis > 0:
                fuzzer.schemathesis(args.schemathesis)
            fuzzer.tally.seconds = time.perf_counter() - started
            end = fuzzer.finish()
            info["Load after"] = load_average()
            log = scan_log(gateway.log)
    except SetupError as exc:
        sys.exit(f"fuzz: setup failed: {exc}")
    info["Gateway"] = (
        "`python -m tiergate serve`: vllm (open, FakeOpenAI), claude (closed, FakeAnthropic)"
        + ("" if args.no_embedded else f", local (open, embedded SmolLM2: {json.dumps(EMBEDDED)})")
        + "; breakers, dispatch and limits at their defaults; router rules; ledger in SQLite"
    )
    text = render(fuzzer.tally, log, end, info, args.section)
    print(text)
    write_section(args.out, args.section, text)
    print(f"written to {args.out}")


def write_section(path: Path, name: str, text: str) -> None:
    """Put ``text`` between this run's markers in ``path``, leaving other runs' sections as they are."""
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    doc = path.read_text() if path.exists() else f"{TITLE}\n\n{INTRO}\n"
    if begin not in doc:
        doc = doc.rstrip("\n") + f"\n\n{begin}\n{end}\n"
    head, rest = doc.split(begin, 1)
    path.write_text(f"{head}{begin}\n{text.rstrip()}\n{end}{rest.split(end, 1)[1]}")


if __name__ == "__main__":
    main()
