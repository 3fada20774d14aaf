"""What shared limits cost per request: the same key's budget and rate limit kept in process and in Redis.

    nice -n 10 python benchmarks/shared_limits.py [--duration 5] [--repeats 3] [--out docs/benchmarks-shared-limits.md]

Three `tiergate serve` processes on loopback, one after the other under the same closed-loop load (the
machinery of ``benchmarks/overhead.py``: its fake upstream in a process of its own, its minimal HTTP/1.1
client), each with one open backend and one API key:

- **no limits**: the key has none (the admission step returns at once);
- **in process**: the key has a monthly budget and requests/tokens-per-minute limits, kept by this process
  (``LocalLimiter``, what every gateway did before issue 16);
- **Redis**: the same limits in Redis (``redis:``), a ``redis-server`` of the benchmark's own (Debian's, no
  persistence): one reservation script per request on its path, the settlement batched off it.

The limits are set far above the load, so every request is reserved, admitted and settled and none is refused.
Two phases. **c=1**: one client with a keep-alive connection to each target sends one request to each in turn,
so the three are measured request by request in the same moments of the machine's load (on a small shared
machine a round trip to another process waits for the scheduler, and that wait moves with the load): the
per-request difference the goal is about. **c=16**: 16 closed-loop clients for one target at a time (the order
rotated each repeat): throughput and CPU per request at saturation. The whole set is repeated; tables give the
medians of the repeats. Then key changes (revoke, restore) are
written to Redis and timed until the gateway's ``/readyz`` shows them applied. *added* = the percentile through a target
minus the same percentile with the limits in process, within one repeat. CPU per request is user + system
CPU of the gateway process (and, for Redis, of redis-server, shown apart) over the answers given.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import httpx
import overhead
from overhead import BENCH, ROOT, Connection, Sample, Service, percentile

TARGETS = ("no limits", "in process", "Redis")
KEY = "sk-bench"
LIMITS = {"budget_usd_per_month": 1e9, "requests_per_minute": 10**9, "tokens_per_minute": 10**12}
KEEP_MARKER = "<!-- hand-written below: kept by benchmarks/shared_limits.py -->"


def request_bytes(port: int) -> bytes:
    body = json.dumps({"model": "open", "messages": overhead.PROMPT, "max_tokens": 8}).encode()
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\ncontent-type: application/json\r\n"
        f"authorization: Bearer {KEY}\r\ncontent-length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


@dataclass
class RedisServer:
    port: int
    process: subprocess.Popen[bytes]

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


def start_redis(run_dir: Path) -> RedisServer:
    binary = shutil.which("redis-server")
    if binary is None:
        sys.exit("redis-server is not installed: run scripts/start-redis.sh once (it installs Debian's package)")
    port = overhead._free_port()
    argv = [binary, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no"]
    with (run_dir / "redis.log").open("ab") as log:
        process = subprocess.Popen([*argv, "--dir", str(run_dir)], stdout=log, stderr=subprocess.STDOUT)
    for _ in range(200):
        out = subprocess.run(["redis-cli", "-p", str(port), "ping"], capture_output=True, text=True)
        if out.stdout.strip() == "PONG":
            return RedisServer(port, process)
        time.sleep(0.05)
    sys.exit(f"redis-server did not start: {(run_dir / 'redis.log').read_text()}")


def start_gateway(name: str, upstream: Service, run_dir: Path, redis_url: str | None) -> Service:
    port = overhead._free_port()
    key: dict[str, object] = {"name": "bench", "key": KEY}
    if name != "no limits":
        key.update(LIMITS)
    config: dict[str, object] = {
        "backends": [
            {"name": "up", "tier": "open", "kind": "openai", "base_url": f"http://127.0.0.1:{upstream.port}/v1",
             "model": overhead.UPSTREAM_MODEL}
        ],
        "router": {"kind": "open"},
        "keys": [key],
        "ledger": {"url": f"sqlite:///{run_dir / (name.replace(' ', '-') + '.db')}"},
    }  # fmt: skip
    if redis_url is not None:
        config["redis"] = {"url": redis_url, "prefix": "bench"}
    path = run_dir / f"{name.replace(' ', '-')}.yaml"
    path.write_text(json.dumps(config))
    tiergate = Path(sys.executable).with_name("tiergate")
    argv = [str(tiergate), "serve", "--config", str(path), "--port", str(port), "--log-level", "warning"]
    return overhead.start(name.replace(" ", "-"), argv, model="open", port=port, ready="/readyz", run_dir=run_dir)


def check(service: Service) -> None:
    reply = httpx.post(
        f"http://127.0.0.1:{service.port}/v1/chat/completions",
        json={"model": "open", "messages": overhead.PROMPT, "max_tokens": 8},
        headers={"authorization": f"Bearer {KEY}"},
        timeout=30,
    )
    if reply.status_code != 200 or reply.json()["choices"][0]["message"]["content"] != "ok":
        sys.exit(f"{service.name}: unexpected answer {reply.status_code}: {reply.text[:300]}")


@dataclass
class Run:
    sample: Sample
    redis_cpu: float = 0.0


async def _exchange(conn: Connection, request: bytes, sample: Sample | None) -> None:
    t0 = time.perf_counter()
    try:
        async with asyncio.timeout(30):
            status, _, close = await conn.exchange(request)
    except (OSError, TimeoutError, ValueError, asyncio.IncompleteReadError):
        status, close = 0, True
    if sample is not None:
        if status == 200:
            sample.latency.append(time.perf_counter() - t0)
        else:
            sample.errors += 1
    if close:
        conn.close()


async def _round_robin(services: dict[str, Service], until: float, samples: dict[str, Sample] | None) -> None:
    """One client, a connection to each target, one request to each in turn: one request in flight at a time,
    every target measured in the same moments of the machine's load."""
    conns = {name: Connection(s.port) for name, s in services.items()}
    requests = {name: request_bytes(s.port) for name, s in services.items()}
    try:
        while time.perf_counter() < until:
            for name in services:
                await _exchange(conns[name], requests[name], None if samples is None else samples[name])
    finally:
        for conn in conns.values():
            conn.close()


async def _closed_loop(service: Service, concurrency: int, until: float, sample: Sample | None) -> None:
    """``concurrency`` clients of one target, each sending its next request as soon as its answer is read."""
    conns = [Connection(service.port) for _ in range(concurrency)]
    request = request_bytes(service.port)

    async def client(conn: Connection) -> None:
        while time.perf_counter() < until:
            await _exchange(conn, request, sample)

    try:
        await asyncio.gather(*(client(c) for c in conns))
    finally:
        for conn in conns:
            conn.close()


async def _measure(
    services: dict[str, Service], redis: RedisServer, concurrency: int, seconds: float, warm: float
) -> dict[str, Run]:
    """One client going round the targets (``concurrency`` 1), or ``concurrency`` clients for each target in
    turn (the order given); ``seconds`` measured after ``warm`` unmeasured, per phase or per target."""
    runs: dict[str, Run] = {}
    groups = [services] if concurrency == 1 else [{name: s} for name, s in services.items()]
    for group in groups:
        if concurrency == 1:
            await _round_robin(group, time.perf_counter() + warm, None)
        else:
            (only,) = group.values()
            await _closed_loop(only, concurrency, time.perf_counter() + warm, None)
        samples = {name: Sample() for name in group}
        cpu0 = {name: s.cpu_seconds() for name, s in group.items()}
        rcpu0, t0 = redis.cpu_seconds(), time.perf_counter()
        if concurrency == 1:
            await _round_robin(group, t0 + seconds, samples)
        else:
            ((name, only),) = group.items()
            await _closed_loop(only, concurrency, t0 + seconds, samples[name])
        elapsed, rcpu = time.perf_counter() - t0, redis.cpu_seconds() - rcpu0
        for name, sample in samples.items():
            sample.elapsed = elapsed
            sample.server_cpu = group[name].cpu_seconds() - cpu0[name]
            runs[name] = Run(sample, rcpu if name == "Redis" else 0.0)
    return runs


def propagation(service: Service, redis: RedisServer, changes: int) -> list[float]:
    """Seconds from a key change written to Redis (``tiergate keys revoke|restore``, through KeyStore) until the
    gateway has applied it (its ``/readyz`` shows the new version), ``changes`` times, revoke and restore in turn."""
    from redis.asyncio import Redis

    from tiergate.limits.keys import KeyOverride, KeyStore

    async def run() -> list[float]:
        client = Redis(port=redis.port, decode_responses=True)
        store = KeyStore(client, "bench")
        out = []
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{service.port}") as http:
            for n in range(changes):
                t0 = time.perf_counter()
                version = await (
                    store.change("bench", KeyOverride(revoked=True)) if n % 2 == 0 else store.clear("bench")
                )
                while True:  # polled: the gateway has no way to say when it applied a change
                    if (await http.get("/readyz")).json()["limits"]["keys_version"] >= version:
                        break
                    await asyncio.sleep(0.005)
                out.append(time.perf_counter() - t0)
                await asyncio.sleep(0.137)  # not in step with the 0.25 s refresh
        await client.aclose()
        return out

    return asyncio.run(run())


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.3f}"


def tables(runs: dict[tuple[int, str], list[Run]], phases: list[int]) -> list[tuple[str, list[str], list[list[str]]]]:
    rows = []
    for c in phases:
        base = runs[(c, "in process")]
        for target in TARGETS:
            mine = runs[(c, target)]

            def med(values: list[float]) -> float:
                return statistics.median(values)

            p50 = med([percentile(r.sample.latency, 50) for r in mine])
            p99 = med([percentile(r.sample.latency, 99) for r in mine])
            pairs = list(zip(mine, base, strict=True))
            added50 = med([percentile(a.sample.latency, 50) - percentile(b.sample.latency, 50) for a, b in pairs])
            added99 = med([percentile(a.sample.latency, 99) - percentile(b.sample.latency, 99) for a, b in pairs])
            gateway_cpu = med([r.sample.cpu_ms_per_request() for r in mine])
            redis_cpu = med([1000 * r.redis_cpu / max(1, len(r.sample.latency)) for r in mine])
            rows.append(
                [
                    str(c),
                    target,
                    _ms(p50),
                    _ms(p99),
                    "" if target == "in process" else _ms(added50),
                    "" if target == "in process" else _ms(added99),
                    f"{med([r.sample.rps for r in mine]):,.0f}",
                    f"{gateway_cpu:.3f}",
                    f"{redis_cpu:.3f}" if target == "Redis" else "",
                    f"{gateway_cpu + redis_cpu:.3f}",
                    str(sum(r.sample.errors for r in mine)),
                ]
            )
    header = ["c", "limits", "p50 ms", "p99 ms", "added p50", "added p99", "req/s", "gateway CPU ms/req"]
    header += ["redis-server CPU ms/req", "CPU ms/req in all", "errors"]
    return [("Latency and CPU per request (added = minus the same percentile, limits in process)", header, rows)]


def render(tabs: list[tuple[str, list[str], list[list[str]]]], info: dict[str, str]) -> str:
    lines = [
        "# Shared limits: in process vs Redis",
        "",
        "Generated by `python benchmarks/shared_limits.py`; the method is in that file's docstring.",
        "",
        "## Run conditions",
        "",
        *(f"- **{k}**: {v}" for k, v in info.items()),
        "",
        "## Results",
        "",
    ]
    for title, header, rows in tabs:
        lines += [f"### {title}", "", "| " + " | ".join(header) + " |"]
        lines.append("|" + "|".join("---" if h in ("limits",) else "---:" for h in header) + "|")
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=15.0, help="measured seconds per phase")
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--concurrency", default="1,16", help="1: round robin over the targets; n: n clients each")
    parser.add_argument("--changes", type=int, default=40, help="key changes timed for the propagation table")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks-shared-limits.md")
    args = parser.parse_args()
    phases = [int(c) for c in args.concurrency.split(",") if c]
    run_dir = BENCH / "shared-limits-run"
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    info = overhead.machine()
    info["Date"] = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    info["Load before"] = overhead.load_average()
    redis_version = subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout.split()
    info["Redis"] = f"{' '.join(redis_version[:3])} (Debian's package), loopback, no persistence"
    runs: dict[tuple[int, str], list[Run]] = {}
    with ExitStack() as stack:
        redis = start_redis(run_dir)
        stack.callback(redis.stop)
        upstream = overhead.start_upstream(run_dir)
        stack.callback(upstream.stop)
        services = {}
        for name in TARGETS:
            url = f"redis://127.0.0.1:{redis.port}/0" if name == "Redis" else None
            services[name] = start_gateway(name, upstream, run_dir, url)
            stack.callback(services[name].stop)
            check(services[name])
        loads = []
        started = time.monotonic()
        for repeat in range(args.repeats):
            order = list(TARGETS[repeat % 3 :] + TARGETS[: repeat % 3])
            for c in phases:
                loads.append(os.getloadavg()[0])
                ordered = {name: services[name] for name in order}
                measured = asyncio.run(_measure(ordered, redis, c, args.duration, args.warmup))
                for name, run in measured.items():
                    runs.setdefault((c, name), []).append(run)
                    s = run.sample
                    print(
                        f"[{repeat + 1}/{args.repeats}] c={c:<3} {name:<11} {s.rps:7,.0f} req/s  p50 "
                        f"{_ms(percentile(s.latency, 50))} ms  gateway CPU {s.cpu_ms_per_request():.3f} ms/req  "
                        f"redis CPU {1000 * run.redis_cpu / max(1, len(s.latency)):.3f} ms/req  errors {s.errors}",
                        flush=True,
                    )
        delays = propagation(services["Redis"], redis, args.changes)
        info["Load after"] = overhead.load_average()
        info["Load during"] = f"1-min load average between {min(loads):.2f} and {max(loads):.2f} (sampled per phase)"
        info["Load generator"] = (
            f"benchmarks/overhead.py's connections, one asyncio process; "
            f"{args.duration:g} s per phase after "
            f"{args.warmup:g} s warm-up, repeats: {args.repeats}, {(time.monotonic() - started) / 60:.1f} min in all"
        )
    tabs = tables(runs, phases)
    header = ["changes", "p50 s", "p95 s", "max s"]
    row = [str(len(delays)), *(f"{percentile(delays, q):.3f}" for q in (50, 95, 100))]
    tabs.append(("Key change (revoke / restore) to applied on the gateway (redis.refresh_s 0.25 s)", header, [row]))
    for title, header, rows in tabs:
        print(title)
        print(" | ".join(header))
        for row in rows:
            print(" | ".join(row))
    kept = args.out.read_text().partition(KEEP_MARKER)[2] if args.out.is_file() else ""
    args.out.write_text(render(tabs, info) + (f"\n{KEEP_MARKER}{kept}" if kept else ""))
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
