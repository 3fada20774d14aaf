"""Gateway overhead: the same load sent straight to a fast fake upstream, through tiergate, and through LiteLLM.

    python benchmarks/overhead.py [--duration 10] [--repeats 3] [--out docs/benchmarks-overhead.md]

Every party is its own process on loopback: the fake upstream (``tests/fakes/fake_openai.py`` under
uvicorn on asyncio and h11, a fixed reply ``"ok"``), tiergate (``tiergate serve``, one backend, ``router: {kind:
open}``, requests for ``model: open``), tiergate again with uvloop on its path (the event loop LiteLLM's proxy
runs on; once a what-if, now the same as ``tiergate``, which depends on uvloop), LiteLLM's proxy (``litellm[proxy]``,
pinned below, installed on first use into ``.bench/litellm-venv``, one worker, no database, no
callbacks) and the load generator, this script. Nothing is pinned to a CPU.

Each phase runs the targets one after the other, and the whole set of phases is repeated
(``--repeats``); the tables give the median of the repeats. A phase is ``--warmup`` seconds thrown
away, then ``--duration`` seconds of closed-loop load: ``c`` keep-alive connections, each sending its
next request as soon as the last answer is read. "Added" latency is a percentile through the gateway
minus the same percentile straight to the upstream, taken within one repeat, then the median. Streaming
time to first byte is the time to the first chunk that carries a ``data:`` line. A target found dead
is started again and the phase measured again; the crash goes into the notes of the output.

The load generator is a minimal HTTP/1.1 client on asyncio streams rather than httpx: on a small
machine it shares the CPUs with the upstream and the gateway, and httpx would spend more CPU per
request than the fake upstream does.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import math
import os
import platform
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / ".bench"
# The newest release tried whose ``[proxy]`` extra installs from the package index this project uses:
# 1.108.14, 1.109.3 and 1.110.2 pin builds of litellm-proxy, litellm-proxy-extras or litellm-enterprise
# that the index lacks, and 1.107.0 (the release reported as compromised) is not there at all.
LITELLM_VERSION = "1.106.12"
# The uvloop that litellm[proxy]==1.106.12 resolves to, for the tiergate+uvloop what-if.
UVLOOP_VERSION = "0.23.0"
UPSTREAM_MODEL = "fake"
TARGETS = ("direct", "tiergate", "tiergate+uvloop", "litellm")
PROMPT = [{"role": "user", "content": "Reply with the word ok."}]
_CONTENT_LENGTH = re.compile(rb"\r\ncontent-length:\s*(\d+)", re.IGNORECASE)
_CHUNKED = re.compile(rb"\r\ntransfer-encoding:\s*chunked", re.IGNORECASE)
_CLOSE = re.compile(rb"\r\nconnection:\s*close", re.IGNORECASE)
_TEXT_COLUMNS = {"c", "target", "tiergate", "phase"}
# What follows this line in the output file is written by hand and kept when the results are regenerated.
KEEP_MARKER = "<!-- hand-written below: kept by benchmarks/overhead.py -->"


def fake_upstream() -> Any:
    """The upstream, for ``uvicorn --factory`` (``tests`` must be importable: run from the repository root)."""
    from tests.fakes import FakeOpenAI

    return FakeOpenAI(models=[UPSTREAM_MODEL], reply_text="ok", record=False)


class SetupError(Exception):
    """A target could not be installed or started; the message says why."""


# --------------------------------------------------------------------------------------- processes


@dataclass
class Service:
    """One server process; :meth:`launch` (again after a crash) starts it and waits until it is ready."""

    name: str
    port: int
    model: str
    argv: Sequence[str]
    ready: str  # a path that answers GET with 200 once the server can take requests
    run_dir: Path
    env: dict[str, str | None] = field(default_factory=dict)  # added to os.environ; None removes a variable
    process: subprocess.Popen[bytes] | None = None

    @property
    def log(self) -> Path:
        return self.run_dir / f"{self.name.replace('+', '-')}.log"

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def exit_status(self) -> str:
        code = None if self.process is None else self.process.poll()
        if code is None:
            return "running"
        return f"signal {signal.Signals(-code).name}" if code < 0 else f"exit status {code}"

    def launch(self, timeout: float = 180.0) -> None:
        environ = {k: v for k, v in {**os.environ, **self.env}.items() if v is not None}
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                self.argv, cwd=self.run_dir, env=environ, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise SetupError(f"{self.name} ended ({self.exit_status()}) while starting: {_tail(self.log)}")
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}{self.ready}", timeout=2.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.25)
        self.stop()
        raise SetupError(f"{self.name} was not ready after {timeout:.0f} s: {_tail(self.log)}")

    def cpu_seconds(self) -> float:
        """User + system CPU of the process and its descendants, from /proc."""
        if self.process is None:
            return 0.0
        tick = os.sysconf("SC_CLK_TCK")
        stats: dict[int, tuple[int, float]] = {}
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                except OSError:
                    continue
                stats[int(entry.name)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / tick)
        tree, total = {self.process.pid}, 0.0
        for _ in range(4):  # a few levels of descendants are plenty (uvicorn workers, helper processes)
            tree |= {pid for pid, (ppid, _) in stats.items() if ppid in tree}
        for pid in tree:
            total += stats.get(pid, (0, 0.0))[1]
        return total

    def stop(self) -> None:
        if self.alive():
            assert self.process is not None
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def start(
    name: str,
    argv: Sequence[str],
    *,
    model: str,
    port: int,
    ready: str,
    run_dir: Path,
    env: dict[str, str | None] | None = None,
) -> Service:
    """Start a server; a process that dies or is not ready in time fails with its log's tail."""
    service = Service(name, port, model, argv, ready, run_dir, env or {})
    service.log.unlink(missing_ok=True)
    service.launch()
    return service


def _tail(log: Path, lines: int = 12) -> str:
    try:
        return " | ".join(log.read_text(errors="replace").strip().splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _pip(python: Path | str, *args: str) -> None:
    result = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *args],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        errors = [line for line in result.stderr.splitlines() if line.startswith("ERROR")] or [result.stderr[-500:]]
        raise SetupError(f"pip install {' '.join(args)} failed: {' '.join(errors)[-800:]}")


def ensure_litellm(venv: Path) -> Path:
    """``litellm[proxy]==LITELLM_VERSION`` in its own virtualenv (created on first use); its ``litellm`` command."""
    python = venv / "bin" / "python"
    probe = [str(python), "-c", "import importlib.metadata as m; print(m.version('litellm'))"]
    if python.exists() and subprocess.run(probe, capture_output=True, text=True).stdout.strip() == LITELLM_VERSION:
        return venv / "bin" / "litellm"
    print(f"installing litellm[proxy]=={LITELLM_VERSION} into {venv} (a minute or two) ...", flush=True)
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
    _pip(python, f"litellm[proxy]=={LITELLM_VERSION}")
    return venv / "bin" / "litellm"


def ensure_uvloop(target: Path) -> Path:
    """uvloop in a folder of its own, put on tiergate's ``PYTHONPATH`` (the project's venv stays untouched)."""
    if not any(target.glob(f"uvloop-{UVLOOP_VERSION}.dist-info")):
        shutil.rmtree(target, ignore_errors=True)
        _pip(sys.executable, "--target", str(target), f"uvloop=={UVLOOP_VERSION}")
    return target


def start_upstream(run_dir: Path) -> Service:
    port = _free_port()
    argv = [
        sys.executable,
        "-m",
        "uvicorn",
        "--factory",
        "--app-dir",
        str(ROOT / "benchmarks"),
        "overhead:fake_upstream",
        "--port",
        str(port),
        "--log-level",
        "warning",
        "--no-access-log",
        "--loop",  # the fake stays on asyncio and h11, whatever tiergate runs on
        "asyncio",
        "--http",
        "h11",
    ]
    return start(
        "direct", argv, model=UPSTREAM_MODEL, port=port, ready="/health", run_dir=run_dir, env={"PYTHONPATH": str(ROOT)}
    )


def start_tiergate(name: str, upstream: Service, run_dir: Path, extra_path: Path | None = None) -> Service:
    port = _free_port()
    config = run_dir / f"{name.replace('+', '-')}.yaml"
    backend = {
        "name": "up",
        "tier": "open",
        "kind": "openai",
        "base_url": f"http://127.0.0.1:{upstream.port}/v1",
        "model": UPSTREAM_MODEL,
    }
    config.write_text(json.dumps({"backends": [backend], "router": {"kind": "open"}}))  # JSON is YAML
    tiergate = Path(sys.executable).with_name("tiergate")
    argv = [str(tiergate), "serve", "--config", str(config), "--port", str(port), "--log-level", "warning"]
    env: dict[str, str | None] = {"PYTHONPATH": str(extra_path) if extra_path else None}
    # The ledger (SQLite, the default) lands in run_dir, the working directory.
    return start(name, argv, model="open", port=port, ready="/readyz", run_dir=run_dir, env=env)


def start_litellm(litellm: Path, upstream: Service, run_dir: Path) -> Service:
    port = _free_port()
    config = run_dir / "litellm.yaml"
    config.write_text(
        json.dumps(
            {
                "model_list": [
                    {
                        "model_name": "open",
                        "litellm_params": {
                            "model": f"openai/{UPSTREAM_MODEL}",
                            "api_base": f"http://127.0.0.1:{upstream.port}/v1",
                            "api_key": "x",
                        },
                    }
                ],
                "litellm_settings": {"telemetry": False, "set_verbose": False, "json_logs": False},
                # Like tiergate on loopback without keys: no auth. Without this 1.106 refuses to start.
                "general_settings": {"dangerously_permit_weak_or_unset_master_key": True},
            }
        )
    )
    env: dict[str, str | None] = {
        "LITELLM_LOG": "ERROR",
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "LITELLM_TELEMETRY": "False",
        "DATABASE_URL": None,
        "LITELLM_MASTER_KEY": None,
        "STORE_MODEL_IN_DB": "False",
        "DISABLE_ADMIN_UI": "True",
    }
    argv = [str(litellm), "--config", str(config), "--port", str(port), "--num_workers", "1"]
    return start("litellm", argv, model="open", port=port, ready="/health/liveliness", run_dir=run_dir, env=env)


# ------------------------------------------------------------------------------------------- load


def http_request(port: int, model: str, stream: bool) -> bytes:
    body = json.dumps({"model": model, "messages": PROMPT, "max_tokens": 8, "stream": stream}).encode()
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\ncontent-type: application/json\r\n"
        f"accept: {'text/event-stream' if stream else 'application/json'}\r\ncontent-length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


class Connection:
    """One keep-alive HTTP/1.1 connection: write a prepared request, read the whole answer."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        self.close()
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port, limit=1 << 20)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.reader = self.writer = None

    async def exchange(self, request: bytes) -> tuple[int, float, bool]:
        """(status, when the first byte of content arrived, whether the server closes the connection).

        "First byte" is the first chunk carrying a ``data:`` line for a chunked (streaming) answer, the
        end of the head otherwise.
        """
        if self.reader is None or self.writer is None:
            await self.open()
        reader, writer = self.reader, self.writer
        assert reader is not None
        assert writer is not None
        writer.write(request)
        head = await reader.readuntil(b"\r\n\r\n")
        first = time.perf_counter()
        if _CHUNKED.search(head):
            seen = False
            while size := int((await reader.readuntil(b"\r\n")).split(b";", 1)[0], 16):
                chunk = await reader.readexactly(size + 2)
                if not seen and b"data:" in chunk:
                    first, seen = time.perf_counter(), True
            await reader.readuntil(b"\r\n")  # the empty trailer
        elif match := _CONTENT_LENGTH.search(head):
            await reader.readexactly(int(match.group(1)))
        return int(head[9:12]), first, bool(_CLOSE.search(head))


@dataclass
class Sample:
    """One phase against one target."""

    latency: list[float] = field(default_factory=list)  # seconds, whole answer
    ttfb: list[float] = field(default_factory=list)  # seconds, first content byte
    errors: int = 0
    elapsed: float = 0.0
    server_cpu: float = 0.0  # seconds of CPU the target's process(es) used
    client_cpu: float = 0.0

    @property
    def rps(self) -> float:
        return len(self.latency) / self.elapsed if self.elapsed else 0.0

    def cpu_ms_per_request(self) -> float:
        return 1000 * self.server_cpu / max(1, len(self.latency))


async def _drive(conn: Connection, request: bytes, until: float, sample: Sample) -> None:
    while (t0 := time.perf_counter()) < until:
        try:
            async with asyncio.timeout(30):
                status, first, close = await conn.exchange(request)
        except (OSError, TimeoutError, ValueError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            sample.errors += 1
            conn.close()
            await asyncio.sleep(0.05)  # a target that is down must not spin the CPU the others need
            continue
        if status == 200:
            sample.latency.append(time.perf_counter() - t0)
            sample.ttfb.append(first - t0)
        else:
            sample.errors += 1
        if close:
            conn.close()


async def _measure(service: Service, concurrency: int, stream: bool, seconds: float, warmup: float) -> Sample:
    request = http_request(service.port, service.model, stream)
    conns = [Connection(service.port) for _ in range(concurrency)]
    await asyncio.gather(*(c.open() for c in conns))
    try:
        until = time.perf_counter() + warmup
        await asyncio.gather(*(_drive(c, request, until, Sample()) for c in conns))
        sample = Sample()
        cpu0, client0, t0 = service.cpu_seconds(), resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        await asyncio.gather(*(_drive(c, request, t0 + seconds, sample) for c in conns))
        sample.elapsed = time.perf_counter() - t0
        client1 = resource.getrusage(resource.RUSAGE_SELF)
        sample.server_cpu = service.cpu_seconds() - cpu0
        sample.client_cpu = (client1.ru_utime + client1.ru_stime) - (client0.ru_utime + client0.ru_stime)
        return sample
    finally:
        for c in conns:
            c.close()


def measure(service: Service, concurrency: int, stream: bool, seconds: float, warmup: float) -> Sample:
    return asyncio.run(_measure(service, concurrency, stream, seconds, warmup))


def check(service: Service) -> None:
    """One plain and one streamed request, with an independent client: the reply must be the upstream's "ok"."""
    url = f"http://127.0.0.1:{service.port}/v1/chat/completions"
    body = {"model": service.model, "messages": PROMPT, "max_tokens": 8}
    reply = httpx.post(url, json=body, timeout=30.0)
    if reply.status_code != 200 or reply.json()["choices"][0]["message"]["content"] != "ok":
        raise SetupError(f"{service.name}: unexpected answer {reply.status_code}: {reply.text[:300]}")
    streamed = httpx.post(url, json={**body, "stream": True}, timeout=30.0)
    text = "".join(
        json.loads(line[5:])["choices"][0]["delta"].get("content") or ""
        for line in streamed.text.splitlines()
        if line.startswith("data:") and "[DONE]" not in line and '"choices":[]' not in line
    )
    if streamed.status_code != 200 or text != "ok":
        raise SetupError(f"{service.name}: unexpected stream {streamed.status_code}: {streamed.text[:300]}")


# ---------------------------------------------------------------------------------------- results


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in [0, 100])."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    return ordered[max(0, min(len(ordered) - 1, math.ceil(q / 100 * len(ordered)) - 1))]


@dataclass(frozen=True)
class Phase:
    concurrency: int
    stream: bool

    @property
    def label(self) -> str:
        return f"{'stream' if self.stream else 'plain'} c={self.concurrency}"


def _series(sample: Sample, phase: Phase) -> list[float]:
    return sample.ttfb if phase.stream else sample.latency


@dataclass
class Results:
    phases: list[Phase]
    targets: list[str]
    runs: dict[tuple[Phase, str], list[Sample]] = field(default_factory=dict)

    def samples(self, phase: Phase, target: str) -> list[Sample]:
        return self.runs.get((phase, target), [])

    def metric(self, phase: Phase, target: str, q: float) -> float:
        """Median over repeats of the q-th percentile (of TTFB for streams, of the whole answer otherwise)."""
        values = [percentile(_series(s, phase), q) for s in self.samples(phase, target)]
        return statistics.median(values) if values else math.nan

    def added(self, phase: Phase, target: str, q: float) -> float:
        """Median over repeats of (percentile through ``target`` - the same percentile direct, same repeat)."""
        pairs = zip(self.samples(phase, target), self.samples(phase, "direct"), strict=False)
        values = [percentile(_series(a, phase), q) - percentile(_series(b, phase), q) for a, b in pairs]
        return statistics.median(values) if values else math.nan

    def rps(self, phase: Phase, target: str) -> list[float]:
        return [s.rps for s in self.samples(phase, target)]

    def cpu_ms(self, phase: Phase, target: str) -> float:
        values = [s.cpu_ms_per_request() for s in self.samples(phase, target)]
        return statistics.median(values) if values else math.nan

    def errors(self, target: str) -> int:
        return sum(s.errors for (_, t), runs in self.runs.items() if t == target for s in runs)


def _ms(seconds: float) -> str:
    return "n/a" if math.isnan(seconds) else f"{seconds * 1000:.2f}"


def _ratio(x: float, y: float) -> str:
    return "n/a" if math.isnan(x) or math.isnan(y) or y == 0 else f"{x / y:.2f}"


def tables(results: Results) -> list[tuple[str, list[str], list[list[str]]]]:
    """(title, header, rows) for the console and the markdown alike."""
    out: list[tuple[str, list[str], list[list[str]]]] = []
    saturation = max((p for p in results.phases if not p.stream), key=lambda p: p.concurrency)
    rows = []
    for target in results.targets:
        rps = results.rps(saturation, target)
        med = statistics.median(rps) if rps else math.nan
        lite = results.rps(saturation, "litellm")
        rows.append(
            [
                target,
                "n/a" if math.isnan(med) else f"{med:,.0f}",
                " / ".join(f"{r:,.0f}" for r in rps),
                _ratio(med, statistics.median(lite)) if lite and target != "direct" else "",
                f"{results.cpu_ms(saturation, target):.2f}",
                str(results.errors(target)),
            ]
        )
    out.append(
        (
            f"Requests/s at saturation ({saturation.label}, one worker each)",
            ["target", "req/s (median)", "req/s (each repeat)", "x LiteLLM", "target CPU ms/req", "errors"],
            rows,
        )
    )
    for stream in (False, True):
        rows = []
        for phase in (p for p in results.phases if p.stream is stream):
            for target in results.targets:
                row = [
                    str(phase.concurrency),
                    target,
                    _ms(results.metric(phase, target, 50)),
                    _ms(results.metric(phase, target, 99)),
                ]
                if target == "direct":
                    row += ["", ""]
                else:
                    row += [_ms(results.added(phase, target, 50)), _ms(results.added(phase, target, 99))]
                row.append(f"{statistics.median(results.rps(phase, target) or [math.nan]):,.0f}")
                row.append(f"{results.cpu_ms(phase, target):.2f}")
                rows.append(row)
        what = "Streaming time to first byte" if stream else "Latency, non-streaming"
        out.append(
            (
                f"{what} (ms; added = minus direct)",
                ["c", "target", "p50", "p99", "added p50", "added p99", "req/s", "target CPU ms/req"],
                rows,
            )
        )
    rows = []
    for target in (t for t in results.targets if t.startswith("tiergate")):
        for phase in results.phases:
            if "litellm" not in results.targets:
                continue
            shares = [_ratio(results.added(phase, target, q), results.added(phase, "litellm", q)) for q in (50, 99)]
            rows.append([target, phase.label, *shares])
        if "litellm" in results.targets:
            mine, theirs = results.rps(saturation, target), results.rps(saturation, "litellm")
            rows.append(
                [
                    target,
                    f"req/s ratio ({saturation.label})",
                    _ratio(statistics.median(mine), statistics.median(theirs)) if mine and theirs else "n/a",
                    "",
                ]
            )
    if rows:
        out.append(
            (
                "Goal: added latency <= 0.33 x LiteLLM's, req/s >= 2 x LiteLLM's",
                ["tiergate", "phase", "added p50 / LiteLLM's (or req/s ratio)", "added p99 / LiteLLM's"],
                rows,
            )
        )
    return out


def machine() -> dict[str, str]:
    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = next(
        (line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")),
        platform.processor() or "unknown",
    )
    mem_kb = int(re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text()).group(1))  # type: ignore[union-attr]
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    return {
        "CPU": f"{model}, {os.cpu_count()} logical cores ({len(os.sched_getaffinity(0))} usable)",
        "RAM": f"{mem_kb / 1024 / 1024:.1f} GiB",
        "OS": f"{platform.system()} {platform.release()}, Python {platform.python_version()}",
        "tiergate": f"commit {commit.stdout.strip() or '?'}" + (" plus uncommitted changes" if dirty else ""),
    }


def load_average() -> str:
    return " / ".join(f"{x:.2f}" for x in os.getloadavg()) + " (1 / 5 / 15 min)"


def render_markdown(results: Results, info: dict[str, str], notes: list[str]) -> str:
    lines = [
        "# Gateway overhead: tiergate vs LiteLLM's proxy",
        "",
        "Generated by `python benchmarks/overhead.py`; the method is in that file's docstring.",
        "",
        "## Run conditions",
        "",
    ]
    lines += [f"- **{key}**: {value}" for key, value in info.items()]
    lines += [
        "",
        "## Results",
        "",
        "Medians of the repeats. *added* = a percentile through the gateway minus the same percentile straight "
        "to the upstream, within one repeat (values near zero or negative are noise). *target CPU ms/req* = "
        "user + system CPU of the target's own process divided by the answers it gave (the upstream's for "
        "*direct*, the gateway's alone otherwise): on a shared machine it is the figure least moved by "
        "other load. In the goal table a share of LiteLLM's added latency at or under 0.33, and a req/s "
        "ratio at or over 2, meet the goal.",
        "",
    ]
    for title, header, rows in tables(results):
        lines += [
            f"### {title}",
            "",
            "| " + " | ".join(header) + " |",
            "|" + "|".join("---" if column in _TEXT_COLUMNS else "---:" for column in header) + "|",
        ]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        lines.append("")
    if notes:
        lines += ["## Notes", "", *(f"- {n}" for n in notes), ""]
    return "\n".join(lines)


def show(results: Results, console: Console) -> None:
    for title, header, rows in tables(results):
        table = Table(title=title, title_justify="left")
        for column in header:
            table.add_column(column, justify="left" if column in _TEXT_COLUMNS else "right")
        for row in rows:
            table.add_row(*row)
        console.print(table)


# -------------------------------------------------------------------------------------------- main


def phases_of(concurrency: str, stream_concurrency: str) -> list[Phase]:
    plain = [Phase(int(c), False) for c in concurrency.split(",") if c]
    return plain + [Phase(int(c), True) for c in stream_concurrency.split(",") if c]


def start_targets(
    wanted: Sequence[str], run_dir: Path, stack: ExitStack, notes: list[str], info: dict[str, str]
) -> dict[str, Service]:
    services: dict[str, Service] = {}
    upstream = start_upstream(run_dir)
    stack.callback(upstream.stop)
    services["direct"] = upstream
    for name in wanted:
        try:
            if name == "tiergate":
                service = start_tiergate(name, upstream, run_dir)
            elif name == "tiergate+uvloop":
                service = start_tiergate(name, upstream, run_dir, ensure_uvloop(BENCH / "tiergate-uvloop"))
            elif name == "litellm":
                service = start_litellm(ensure_litellm(BENCH / "litellm-venv"), upstream, run_dir)
            else:
                continue
            stack.callback(service.stop)
            check(service)
        except (SetupError, subprocess.CalledProcessError) as exc:
            notes.append(f"**{name} was not measured**: {exc}")
            print(f"{name}: not measured: {exc}", file=sys.stderr)
            continue
        services[name] = service
    check(upstream)
    if "litellm" in services:
        info["LiteLLM"] = f"litellm[proxy]=={LITELLM_VERSION} in .bench/litellm-venv, `--num_workers 1`, uvloop, h11"
    return services


def measure_resilient(service: Service, phase: Phase, args: argparse.Namespace, when: str, notes: list[str]) -> Sample:
    """Measure; a target found dead before or after the phase is noted, started again and (once) re-measured."""
    for attempt in (1, 2):
        if not service.alive():
            notes.append(
                f"**{service.name} crashed** ({service.exit_status()}) before {phase.label}, {when}; started again"
            )
            print(f"{service.name} crashed ({service.exit_status()}); starting it again", file=sys.stderr)
            service.launch()
        sample = measure(service, phase.concurrency, phase.stream, args.duration, args.warmup)
        if service.alive() or attempt == 2:
            return sample
        notes.append(
            f"**{service.name} crashed** ({service.exit_status()}) during {phase.label}, {when}, after "
            f"{len(sample.latency)} answers and {sample.errors} errors; started again, phase measured again"
        )
        service.launch()
    raise AssertionError("unreachable")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds per phase and target")
    parser.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds before each phase")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--concurrency", default="1,16,64", help="non-streaming phases; the largest is saturation")
    parser.add_argument("--stream-concurrency", default="1,16", help="streaming phases")
    parser.add_argument("--targets", default=",".join(TARGETS[1:]), help=f"among {', '.join(TARGETS[1:])}")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks-overhead.md")
    args = parser.parse_args()
    wanted = [t for t in args.targets.split(",") if t]
    unknown = set(wanted) - set(TARGETS)
    if unknown:
        parser.error(f"unknown target(s): {', '.join(sorted(unknown))}")
    phases = phases_of(args.concurrency, args.stream_concurrency)
    console = Console()
    run_dir = BENCH / "overhead-run"  # logs, configs and tiergate's ledger; kept for a look after the run
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)

    info = machine()
    info["Date"] = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    info["Load before"] = load_average()
    notes: list[str] = []
    with ExitStack() as stack:
        services = start_targets(wanted, run_dir, stack, notes, info)
        targets = [t for t in TARGETS if t in services]
        results = Results(phases, targets)
        started = time.monotonic()
        loads: list[float] = []
        for repeat in range(1, args.repeats + 1):
            order = targets[repeat - 1 :] + targets[: repeat - 1]  # rotated, so no target always goes first
            for phase in phases:
                for target in order:
                    loads.append(os.getloadavg()[0])
                    sample = measure_resilient(services[target], phase, args, f"repeat {repeat}", notes)
                    results.runs.setdefault((phase, target), []).append(sample)
                    p50 = percentile(sample.ttfb if phase.stream else sample.latency, 50)
                    print(
                        f"[{repeat}/{args.repeats}] {phase.label:<12} {target:<16} {sample.rps:8,.0f} req/s  "
                        f"p50 {_ms(p50):>7} ms  target CPU {sample.cpu_ms_per_request():.2f} ms/req  "
                        f"client CPU {1000 * sample.client_cpu / max(1, len(sample.latency)):.3f} ms/req  "
                        f"errors {sample.errors}",
                        flush=True,
                    )
        wall = time.monotonic() - started
        info["Load after"] = load_average()
        info["Load during"] = f"1-min load average between {min(loads):.2f} and {max(loads):.2f} (sampled per phase)"
        info["Upstream"] = 'tests/fakes/fake_openai.py under uvicorn 0.54 (asyncio loop, h11), reply "ok"'
        info["tiergate runtime"] = "uvicorn with uvloop and httptools (tiergate's dependencies)"
        info["Load generator"] = (
            f"this script, one asyncio process; {args.duration:g} s per phase after "
            f"{args.warmup:g} s warm-up, repeats: {args.repeats}, {wall / 60:.1f} min in all"
        )
        for name, service in services.items():
            if not service.alive():
                notes.append(f"{name} ended ({service.exit_status()}) during the run: {_tail(service.log)}")
    show(results, console)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    kept = args.out.read_text().partition(KEEP_MARKER)[2] if args.out.is_file() else ""
    args.out.write_text(render_markdown(results, info, notes) + (f"\n{KEEP_MARKER}{kept}" if kept else ""))
    console.print(f"written to {args.out}")


if __name__ == "__main__":
    main()
