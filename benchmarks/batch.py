"""Batch work at scale: ``tiergate batch`` over 10,000 and 100,000 items against fakes, killed and resumed.

    python benchmarks/batch.py                                   # 10k whole, then 10k and 100k killed + resumed
    python benchmarks/batch.py --sizes 2000 --out /tmp/batch.md  # a quick look

Every party is its own process on loopback: the fake OpenAI-compatible server (``tests/fakes/fake_openai.py``,
the open tier) and the fake Claude with its Message Batches API (``tests/fakes/fake_anthropic.py``), each under
uvicorn, no request log; and ``python -m tiergate batch`` itself, run as a child of this script. The items are
half short prompts (the rules router sends them to the open tier) and half long reasoning prompts of about 1 KB
(closed: Message Batches), in both dialects, all ``model: auto``.

For each size: a run is killed with SIGKILL once ``--kill-at`` of the items were routed (read from its state
file), then the same command runs to the end. At the smallest size a whole, uninterrupted run is measured first
(throughput). Each process's peak RSS comes from ``wait4`` (``ru_maxrss``). Checks, at every size: the output
has every item once, in input order; the ledger has one row per item (distinct request ids, the run's id in
``batch``); the fake's Message Batches hold exactly one request per closed item (listed through the API: no
item was submitted twice). Results: ``docs/benchmarks-batch.md``; the rows of the summary table in
``docs/benchmarks.md`` are written by hand from it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from overhead import Service, SetupError, load_average, machine, start
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route

ROOT = Path(__file__).resolve().parents[1]
RUN_DIR = ROOT / ".bench" / "batch-run"
DOC = ROOT / "docs" / "benchmarks-batch.md"
CLAUDE_KEY_ENV = "BENCH_CLAUDE_KEY"
CLAUDE_KEY = "sk-ant-bench"
HARD = (
    "Prove, step by step, that the sum of the first n odd numbers is n squared, then explain why the same "
    "argument fails for the sum of the first n even numbers; state each lemma you rely on. "
)


def fake_open() -> Any:
    """uvicorn factory: the open tier (one short answer, no log)."""
    sys.path.insert(0, str(ROOT))
    from tests.fakes import FakeOpenAI

    return FakeOpenAI(models=["fake-llama-8b"], reply_text="ok", record=False)


def fake_claude() -> Any:
    """uvicorn factory: Claude with Message Batches (a batch ends at its second retrieve), plus ``/health``."""
    sys.path.insert(0, str(ROOT))
    from tests.fakes import FakeAnthropic

    fake = FakeAnthropic(api_key=CLAUDE_KEY, reply_text="ok", record=False)

    async def health(_: Request) -> PlainTextResponse:
        return PlainTextResponse("ok")

    return Starlette(routes=[Route("/health", health), Mount("/", app=fake)])


def write_items(path: Path, n: int) -> int:
    """``n`` items, half of them closed; returns how many are closed."""
    closed = 0
    with path.open("w") as f:
        for i in range(n):
            if i % 2:
                line: dict[str, Any] = {
                    "custom_id": f"o{i}",
                    "body": {"model": "auto", "messages": [{"role": "user", "content": f"Say hello to ticket {i}."}]},
                }
            else:
                closed += 1
                text = HARD * 5 + f"(ticket {i})"
                if i % 4:
                    line = {
                        "custom_id": f"c{i}",
                        "params": {"model": "auto", "max_tokens": 256, "messages": [{"role": "user", "content": text}]},
                    }
                else:
                    line = {
                        "custom_id": f"c{i}",
                        "body": {"model": "auto", "max_tokens": 256, "messages": [{"role": "user", "content": text}]},
                    }
            f.write(json.dumps(line) + "\n")
    return closed


@dataclass
class Run:
    """One ``tiergate batch`` process: how it ended, its wall time and peak RSS."""

    status: str
    wall_s: float
    peak_rss_mib: float
    routed_at_kill: int | None = None


def run_cli(argv: list[str], env: dict[str, str], state: Path | None = None, kill_at: int | None = None) -> Run:
    """Run the CLI to its end, or SIGKILL it once ``kill_at`` items are routed (read from its state file)."""
    started = time.monotonic()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    routed = None
    if kill_at is not None:
        assert state is not None
        while proc.poll() is None:
            routed = routed_items(state)
            if routed >= kill_at:
                proc.send_signal(signal.SIGKILL)
                break
            time.sleep(0.2)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.monotonic() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    if proc.returncode not in (0, -signal.SIGKILL):
        raise SetupError(f"tiergate batch ended with {proc.returncode}: {err[-2000:]}")
    how = "killed" if proc.returncode == -signal.SIGKILL else "completed"
    return Run(how, wall, usage.ru_maxrss / 1024, routed)


def routed_items(state: Path) -> int:
    if not state.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{state}?mode=ro", uri=True, timeout=1) as db:
            row = db.execute("SELECT value FROM meta WHERE key = 'next_index'").fetchone()
    except sqlite3.Error:
        return 0
    return int(row[0]) if row else 0


def submitted_requests(claude: Service) -> int:
    """Requests in every Message Batch of the fake, through the list API."""
    total, after = 0, None
    headers = {"x-api-key": CLAUDE_KEY, "anthropic-version": "2023-06-01"}
    while True:
        params: dict[str, Any] = {"limit": 1000, **({"after_id": after} if after else {})}
        page = httpx.get(f"http://127.0.0.1:{claude.port}/v1/messages/batches", params=params, headers=headers).json()
        total += sum(sum(b["request_counts"].values()) for b in page["data"])
        if not page["has_more"]:
            return total
        after = page["last_id"]


def check(out: Path, inp: Path, ledger: Path, n: int) -> dict[str, Any]:
    """Every item once in the output, in input order; one ledger row per item, all of one run."""
    with inp.open() as a, out.open() as b:
        order = all(json.loads(x)["custom_id"] == json.loads(y)["custom_id"] for x, y in zip(a, b, strict=True))
    with sqlite3.connect(ledger) as db:
        rows, ids, runs = db.execute(
            "SELECT COUNT(*), COUNT(DISTINCT request_id), COUNT(DISTINCT batch) FROM requests"
        ).fetchone()
        by_tier = dict(db.execute("SELECT tier, COUNT(*) FROM requests GROUP BY tier").fetchall())
    with out.open() as f:
        outcomes: dict[str, int] = {}
        for line in f:
            key = json.loads(line)["tiergate"]["outcome"]
            outcomes[key] = outcomes.get(key, 0) + 1
    return {"in_order": order, "rows": rows, "distinct_ids": ids, "runs": runs, "tiers": by_tier, "outcomes": outcomes}


def measure(size: int, args: argparse.Namespace, open_: Service, claude: Service, whole: bool) -> dict[str, Any]:
    work = RUN_DIR / str(size)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    inp, out, state = work / "in.jsonl", work / "out.jsonl", work / "out.jsonl.state"
    closed = write_items(inp, size)
    config = work / "tiergate.yaml"
    result: dict[str, Any] = {"items": size, "closed": closed, "input_mib": inp.stat().st_size / 2**20}
    env = {**os.environ, CLAUDE_KEY_ENV: CLAUDE_KEY, "PYTHONPATH": str(ROOT / "src")}
    tiergate = [sys.executable, "-m", "tiergate", "batch", str(inp), "--out", str(out), "--config", str(config)]
    options = ["--quiet", "--poll-interval", "1", "--concurrency", str(args.concurrency)]
    options += ["--batch-size", str(args.batch_size)]
    if whole:  # uninterrupted, for throughput (its own ledger and state)
        config.write_text(json.dumps(_config(open_, claude, work / "whole-ledger.db")))
        before = submitted_requests(claude)
        run = run_cli([*tiergate, *options, "--state", str(work / "whole.state")], env)
        result["whole"] = run
        result["whole_items_per_s"] = size / run.wall_s
        result["whole_check"] = check(out, inp, work / "whole-ledger.db", size)
        result["whole_submitted"] = submitted_requests(claude) - before
        out.unlink()
    config.write_text(json.dumps(_config(open_, claude, work / "ledger.db")))
    before = submitted_requests(claude)
    first = run_cli([*tiergate, *options], env, state, kill_at=int(size * args.kill_at))
    second = run_cli([*tiergate, *options], env)
    result.update(first=first, second=second, check=check(out, inp, work / "ledger.db", size))
    result["submitted"] = submitted_requests(claude) - before
    return result


def _config(open_: Service, claude: Service, ledger: Path) -> dict[str, Any]:
    return {
        "backends": [
            {
                "name": "vllm",
                "tier": "open",
                "kind": "openai",
                "base_url": f"http://127.0.0.1:{open_.port}/v1",
                "model": "fake-llama-8b",
                "max_concurrency": 256,
            },
            {
                "name": "claude",
                "tier": "closed",
                "kind": "anthropic",
                "base_url": f"http://127.0.0.1:{claude.port}",
                "model": "claude-sonnet-4-5",
                "api_key_env": CLAUDE_KEY_ENV,
            },
        ],
        "router": {"kind": "rules"},
        "ledger": {"url": f"sqlite:///{ledger}"},
    }


def render(results: list[dict[str, Any]], info: dict[str, str], args: argparse.Namespace, loads: list[str]) -> str:
    lines = [
        "# Batch work: 10,000 and 100,000 items, killed and resumed",
        "",
        "Generated by `python benchmarks/batch.py`; the method is in that file's docstring.",
        "",
        "## Run conditions",
        "",
        *(f"- {k}: {v}" for k, v in info.items()),
        f"- Date: {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC",
        f"- Options: `--concurrency {args.concurrency} --batch-size {args.batch_size} --poll-interval 1`, "
        f"killed at {args.kill_at:.0%} of the items routed; the rules router; run under `nice -n 10`",
        f"- Load average: before {loads[0]}; after {loads[-1]}",
        "",
        "## Results",
        "",
        "| items | input | run | wall | peak RSS | items/s |",
        "|---:|---:|---|---:|---:|---:|",
    ]
    for r in results:
        n = r["items"]
        if "whole" in r:
            w = r["whole"]
            lines.append(
                f"| {n:,} | {r['input_mib']:.1f} MiB | whole | {w.wall_s:.1f} s | {w.peak_rss_mib:.0f} MiB | "
                f"{r['whole_items_per_s']:.0f} |"
            )
        f, s = r["first"], r["second"]
        lines.append(
            f"| {n:,} | {r['input_mib']:.1f} MiB | killed at {f.routed_at_kill:,} routed | {f.wall_s:.1f} s | "
            f"{f.peak_rss_mib:.0f} MiB | |"
        )
        lines.append(
            f"| {n:,} | | resumed to the end | {s.wall_s:.1f} s | {s.peak_rss_mib:.0f} MiB | "
            f"{n / (f.wall_s + s.wall_s):.0f} (both runs) |"
        )
    lines += ["", "## Checks", ""]
    for r in results:
        c = r["check"]
        ok = (
            c["in_order"]
            and c["rows"] == c["distinct_ids"] == r["items"]
            and c["runs"] == 1
            and r["submitted"] == r["closed"]
        )
        lines.append(
            f"- {r['items']:,} items, killed and resumed: output complete and in input order: {c['in_order']}; "
            f"ledger rows {c['rows']:,} ({c['distinct_ids']:,} distinct request ids, {c['runs']} run), by tier "
            f"{c['tiers']}; outcomes {c['outcomes']}; requests in Message Batches {r['submitted']:,} for "
            f"{r['closed']:,} closed items (none twice): **{'pass' if ok else 'FAIL'}**"
        )
        if "whole" in r:
            w = r["whole_check"]
            lines.append(
                f"- {r['items']:,} items, whole run: in order {w['in_order']}, ledger rows {w['rows']:,}, "
                f"requests in Message Batches {r['whole_submitted']:,} for {r['closed']:,} closed items"
            )
    if len(results) > 1:
        small, big = results[0], results[-1]
        ratio = big["second"].peak_rss_mib / small["second"].peak_rss_mib
        lines += [
            "",
            f"Peak RSS of the resumed run: {big['second'].peak_rss_mib:.0f} MiB at {big['items']:,} items vs "
            f"{small['second'].peak_rss_mib:.0f} MiB at {small['items']:,} ({ratio:.2f}x for "
            f"{big['items'] / small['items']:.0f}x the items).",
        ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--kill-at", type=float, default=0.3, help="share of the items routed when the run is killed")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=2_000)
    parser.add_argument("--out", type=Path, default=DOC)
    args = parser.parse_args()
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    env = {"PYTHONPATH": str(ROOT)}
    fakes = ["-m", "uvicorn", "--factory", "--app-dir", str(ROOT / "benchmarks"), "--log-level", "warning"]
    fakes += ["--no-access-log", "--port"]
    loads = [load_average()]
    port_open, port_claude = _free_port(), _free_port()
    open_ = start(
        "open",
        [sys.executable, *fakes, str(port_open), "batch:fake_open"],
        model="fake-llama-8b",
        port=port_open,
        ready="/health",
        run_dir=RUN_DIR,
        env=env,
    )
    claude = start(
        "claude",
        [sys.executable, *fakes, str(port_claude), "batch:fake_claude"],
        model="claude",
        port=port_claude,
        ready="/health",
        run_dir=RUN_DIR,
        env=env,
    )
    try:
        results = []
        for i, size in enumerate(args.sizes):
            print(f"{size:,} items ...", flush=True)
            results.append(measure(size, args, open_, claude, whole=i == 0))
            print(json.dumps(results[-1], default=str), flush=True)
            loads.append(load_average())
    finally:
        open_.stop()
        claude.stop()
    args.out.write_text(render(results, machine(), args, loads))
    print(f"written to {args.out}")


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


if __name__ == "__main__":
    main()
