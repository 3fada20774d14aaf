"""The embedded engine out of process: what the worker costs, what the portable build costs, how fast a crash heals.

    python benchmarks/embedded_engine.py [--native-python PATH] [--rounds 12] [--requests 1000] [--crashes 12]
                                         [--out docs/benchmarks-engine.md]

Four measurements, each side by side in one run (this machine is shared and noisy; ratios are what count):

1. **Build**: the portable build (``requirements/engine.txt``, this interpreter's llama-cpp-python) against a native
   build (``-march=native``, the interpreter given by ``--native-python``; built with
   ``pip wheel --no-cache-dir llama-cpp-python==0.3.36``), in-process, alternating: prompt processing (a prompt of
   about 500 tokens) and generation tokens/s.
2. **Through the gateway**: the same model and settings in-process (llama-cpp-python streaming, this process's
   child) and through ``tiergate serve`` (HTTP streaming to the worker process), one request at a time,
   alternating: time to first token and end-to-end tokens/s.
3. **Memory**: resident memory of the gateway and of its worker at idle and after ``--requests`` requests.
4. **Crash to first success**: SIGKILL the worker, then send one request at once (the default dispatch retries
   the backend, the retry waits for the restarted worker): the time from the kill to its answer. A fresh gateway
   every four kills (five quick exits in a row are a crash loop, which stays down by design).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
PROMPT = [{"role": "user", "content": "Write a long story about a lighthouse keeper and a storm."}]
MAX_TOKENS = 128
THREADS = 1  # one core for the model, the other for the gateway and this client

CHILD = r"""
import json, sys, time
from llama_cpp import Llama
import llama_cpp.llama_cpp as raw
path, n_ctx, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
llm = Llama(model_path=path, n_ctx=n_ctx, n_threads=threads, verbose=False)
print(json.dumps({"system_info": raw.llama_print_system_info().decode()}), flush=True)
for line in sys.stdin:
    job = json.loads(line)
    if job["op"] == "chat":
        t0 = time.perf_counter(); first = None; n = 0
        for chunk in llm.create_chat_completion(messages=job["messages"], max_tokens=job["max_tokens"],
                                                temperature=0, stream=True):
            if chunk["choices"][0]["delta"].get("content"):
                first = first or time.perf_counter(); n += 1
        end = time.perf_counter()
        print(json.dumps({"ttft": first - t0, "total": end - t0, "chunks": n}), flush=True)
    else:  # prompt processing and generation speed, from llama.cpp's own counters
        llm.reset()
        raw.llama_perf_context_reset(llm.ctx)
        llm.create_completion(job["text"], max_tokens=job["max_tokens"], temperature=0)
        perf = raw.llama_perf_context(llm.ctx)
        print(json.dumps({"pp": perf.n_p_eval / perf.t_p_eval_ms * 1000, "tg": perf.n_eval / perf.t_eval_ms * 1000}),
              flush=True)
"""


def model_path() -> str:
    from tiergate.backends.embedded import default_model_path

    return str(default_model_path())


class Child:
    """A llama-cpp-python process of ``python``, fed jobs one at a time."""

    def __init__(self, python: str, n_ctx: int) -> None:
        self.proc = subprocess.Popen(
            [python, "-c", CHILD, model_path(), str(n_ctx), str(THREADS)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        self.info = self.ask(None)

    def ask(self, job: dict[str, Any] | None) -> dict[str, Any]:
        assert self.proc.stdin is not None
        assert self.proc.stdout is not None
        if job is not None:
            self.proc.stdin.write(json.dumps(job) + "\n")
            self.proc.stdin.flush()
        answer: dict[str, Any] = json.loads(self.proc.stdout.readline())
        return answer

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextmanager
def gateway(workdir: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    port = free_port()
    config = workdir / "tiergate.yaml"
    config.write_text(
        f"backends:\n  - {{name: local, tier: open, kind: embedded, n_threads: {THREADS}}}\nrouter: {{kind: rules}}\n"
        f"ledger: {{url: 'sqlite:///{workdir / 'ledger.db'}'}}\n"
    )
    exe = str(Path(sys.executable).with_name("tiergate"))
    proc = subprocess.Popen(
        [exe, "serve", "--config", str(config), "--port", str(port), "--log-level", "warning"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while True:
        try:
            if httpx.get(base + "/readyz", timeout=5).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline or proc.poll() is not None:
            raise RuntimeError("the gateway did not become ready")
        time.sleep(0.1)
    try:
        yield base, proc
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)


class RawClient:
    """A minimal keep-alive HTTP/1.1 client on a blocking socket: the client's own cost stays out of the
    gateway's time to first token (httpx spends a few hundred microseconds per streamed request)."""

    def __init__(self, base: str) -> None:
        host, port = base.removeprefix("http://").split(":")
        self.sock = socket.create_connection((host, int(port)))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.host = f"{host}:{port}"

    def stream(self, body: dict[str, Any]) -> dict[str, float]:
        payload = json.dumps(body).encode()
        head = (
            f"POST /v1/chat/completions HTTP/1.1\r\nhost: {self.host}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(payload)}\r\n\r\n"
        ).encode()
        t0 = time.perf_counter()
        self.sock.sendall(head + payload)
        data = b""
        first = None
        while not data.endswith(b"\r\n0\r\n\r\n"):
            data += self.sock.recv(65536)
            if first is None and re.search(rb'"content":"[^"]', data):
                first = time.perf_counter()
        end = time.perf_counter()
        assert first is not None, data[:500]
        chunks = len(re.findall(rb'"content":"[^"]', data))
        return {"ttft": first - t0, "total": end - t0, "chunks": chunks}

    def close(self) -> None:
        self.sock.close()


def stream_once(client: RawClient) -> dict[str, float]:
    body = {"model": "local", "messages": PROMPT, "max_tokens": MAX_TOKENS, "temperature": 0, "stream": True}
    return client.stream(body)


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def engine_status(base: str) -> dict[str, Any]:
    status: dict[str, Any] = httpx.get(base + "/readyz", timeout=10).json()["backends"]["local"]["engine"]
    return status


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def bench_build(native: str | None, rounds: int) -> dict[str, Any]:
    text = " ".join(["The lighthouse keeper watched the storm roll in over the grey water."] * 35)
    parties = {"portable": sys.executable} | ({"native": native} if native else {})
    children = {name: Child(python, 2048) for name, python in parties.items()}
    results: dict[str, dict[str, list[float]]] = {name: {"pp": [], "tg": []} for name in parties}
    try:
        for _ in range(rounds):
            for name, child in children.items():
                answer = child.ask({"op": "speed", "text": text, "max_tokens": 64})
                results[name]["pp"].append(answer["pp"])
                results[name]["tg"].append(answer["tg"])
        return {
            name: {
                "system_info": children[name].info["system_info"],
                "pp": statistics.median(r["pp"]),
                "tg": statistics.median(r["tg"]),
            }
            for name, r in results.items()
        }
    finally:
        for child in children.values():
            child.close()


def bench_gateway(rounds: int, requests: int, workdir: Path) -> dict[str, Any]:
    child = Child(sys.executable, 8192)
    inproc: list[dict[str, float]] = []
    through: list[dict[str, float]] = []
    try:
        with gateway(workdir) as (base, proc), httpx.Client(timeout=300) as client:
            raw = RawClient(base)
            worker = engine_status(base)["pid"]
            idle = {"gateway": rss_mib(proc.pid), "worker": rss_mib(worker)}
            stream_once(raw)  # warm both
            child.ask({"op": "chat", "messages": PROMPT, "max_tokens": MAX_TOKENS})
            for _ in range(rounds):
                inproc.append(child.ask({"op": "chat", "messages": PROMPT, "max_tokens": MAX_TOKENS}))
                through.append(stream_once(raw))
            short = {"model": "local", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4}
            for _ in range(requests):
                client.post(base + "/v1/chat/completions", json=short).raise_for_status()
            after = {"gateway": rss_mib(proc.pid), "worker": rss_mib(worker)}
            raw.close()
    finally:
        child.close()

    def rate(r: dict[str, float]) -> float:
        return r["chunks"] / r["total"]

    return {
        "in_process": {"ttft_p50": pct([r["ttft"] for r in inproc], 0.5), "rate": statistics.median(map(rate, inproc))},
        "gateway": {"ttft_p50": pct([r["ttft"] for r in through], 0.5), "rate": statistics.median(map(rate, through))},
        "added_ttft_each": sorted(b["ttft"] - a["ttft"] for a, b in zip(inproc, through, strict=True)),
        "rss_idle": idle,
        "rss_after": after,
        "requests": requests,
    }


def bench_crashes(crashes: int, workdir: Path) -> list[float]:
    heal: list[float] = []
    body = {"model": "local", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1}
    while len(heal) < crashes:
        with gateway(workdir) as (base, _), httpx.Client(timeout=120) as client:
            for _ in range(min(4, crashes - len(heal))):
                pid = engine_status(base)["pid"]
                t0 = time.perf_counter()
                os.kill(pid, signal.SIGKILL)
                resp = client.post(base + "/v1/chat/completions", json=body)
                heal.append(time.perf_counter() - t0)
                assert resp.status_code == 200, resp.text
                time.sleep(0.5)
    return heal


def machine() -> str:
    from tiergate.backends.engine.build import cpu_model

    return f"{cpu_model()}, {os.cpu_count()} cores, {platform.system()}, Python {platform.python_version()}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--native-python", help="a Python whose llama-cpp-python was built with -march=native")
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--crashes", type=int, default=12)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks-engine.md")
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        build = bench_build(args.native_python, args.rounds)
        print(json.dumps(build, indent=1), flush=True)
        through = bench_gateway(args.rounds, args.requests, Path(tmp))
        print(json.dumps(through, indent=1), flush=True)
        heal = bench_crashes(args.crashes, Path(tmp))
        print(json.dumps(heal), flush=True)
    args.out.write_text(report(build, through, heal, load_before, os.getloadavg()[0]))
    print(f"wrote {args.out}")


def report(build: dict[str, Any], g: dict[str, Any], heal: list[float], before: float, after: float) -> str:
    day = dt.date.today().isoformat()
    lines = [
        "# Benchmarks: the embedded engine (issue 12)",
        "",
        f"Measured {day} on {machine()}, load average {before:.1f} before and {after:.1f} after, by "
        "`python benchmarks/embedded_engine.py --native-python ...`. SmolLM2-135M-Instruct Q4_1, "
        f"{THREADS} thread for the model (the other core runs the gateway and the client), temperature 0.",
        "",
        "## Portable build against native",
        "",
        "| build | compiled in | prompt processing tok/s | generation tok/s |",
        "|---|---|---|---|",
    ]
    for name, b in build.items():
        isa = b["system_info"].replace("CPU : ", "").replace(" = 1", "").replace(" |", ",").strip(" ,")
        lines.append(f"| {name} | {isa} | {b['pp']:.0f} | {b['tg']:.1f} |")
    if "native" in build:
        pp = build["portable"]["pp"] / build["native"]["pp"]
        tg = build["portable"]["tg"] / build["native"]["tg"]
        lines += ["", f"Portable / native: prompt processing {pp:.2f}x, generation {tg:.2f}x (medians, alternating)."]
    added = g["added_ttft_each"]
    ratio = g["gateway"]["rate"] / g["in_process"]["rate"]
    lines += [
        "",
        f"## Through the gateway against in-process ({len(added)} streamed requests each, alternating, "
        f"max_tokens {MAX_TOKENS})",
        "",
        "| path | time to first token p50 | end-to-end tokens/s (median) |",
        "|---|---|---|",
        f"| in-process (llama-cpp-python) | {g['in_process']['ttft_p50'] * 1000:.1f} ms | "
        f"{g['in_process']['rate']:.1f} |",
        f"| tiergate -> worker process | {g['gateway']['ttft_p50'] * 1000:.1f} ms | {g['gateway']['rate']:.1f} |",
        "",
        f"Tokens/s through the gateway: **{ratio:.3f}x** in-process. Added time to first token, request by request: "
        f"p50 **{pct(added, 0.5) * 1000:.2f} ms** (min {added[0] * 1000:.2f}, max {added[-1] * 1000:.2f} ms).",
        "",
        "## Memory (resident)",
        "",
        "| when | gateway | worker | both |",
        "|---|---|---|---|",
    ]
    for label, m in (("idle, after start", g["rss_idle"]), (f"after {g['requests']} more requests", g["rss_after"])):
        lines.append(f"| {label} | {m['gateway']:.0f} MiB | {m['worker']:.0f} MiB | {sum(m.values()):.0f} MiB |")
    lines += [
        "",
        f"## Worker crash to first successful request ({len(heal)} SIGKILLs)",
        "",
        f"p50 **{pct(heal, 0.5):.2f} s**, p90 {pct(heal, 0.9):.2f} s, min {min(heal):.2f} s, max {max(heal):.2f} s "
        "(restart backoff 0.2 s, then the worker's start: interpreter, model load, self-test).",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
