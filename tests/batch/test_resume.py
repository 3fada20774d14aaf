"""A batch run killed with SIGKILL and started again with the same state file: no item submitted to Message
Batches twice, every item once in the ledger, the output complete and in input order. The CLI runs as its own
process (``python -m tiergate batch``) against loopback fakes served by this test."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.batch.conftest import Upstreams, chat, params, read_jsonl, run_batch_cli, write_config, write_items
from tiergate.accounting.ledger import Ledger
from tiergate.batch import BatchOptions, run_batch
from tiergate.batch.store import Store
from tiergate.config import load_config

REPO = Path(__file__).resolve().parents[2]


def start_cli(tmp_path: Path, inp: Path, out: Path, config: Path, *args: str) -> subprocess.Popen[bytes]:
    argv = [sys.executable, "-m", "tiergate", "batch", str(inp), "--out", str(out), "--config", str(config)]
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    return subprocess.Popen(
        [*argv, "--quiet", *args], cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )


def wait_until(condition: Callable[[], bool], proc: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            _, err = proc.communicate()
            raise AssertionError(f"the CLI ended before the kill (exit {proc.returncode}): {err.decode()[-2000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            raise TimeoutError("the run never reached the point to kill it")
        time.sleep(0.01)


def kill(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL


def ledger_request_ids(tmp_path: Path) -> list[str]:
    async def read() -> list[str]:
        ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
        await ledger.start(writer=False)
        try:
            return [r.request_id for r in await ledger.rows()]
        finally:
            await ledger.close()

    return asyncio.run(read())


def mixed(n: int) -> list[dict[str, Any]]:
    """Every third item for Claude (explicitly), the others for the open tier."""
    return [
        {"custom_id": f"c{i}", "params": params(f"Prove lemma {i}.", model="closed")}
        if i % 3 == 0
        else {"custom_id": f"o{i}", "body": chat(f"Say hello {i}.")}
        for i in range(n)
    ]


def test_killed_mid_run_resumes_without_submitting_any_item_twice(tmp_path: Path, upstreams: Upstreams) -> None:
    upstreams.vllm.delay_s = 0.02  # the open half takes long enough to be cut in the middle
    upstreams.claude.batches.held = True  # the batches stay in progress while the first run lives
    n = 150
    config = write_config(tmp_path, upstreams)
    inp, out = write_items(tmp_path / "in.jsonl", mixed(n)), tmp_path / "out.jsonl"
    args = ("--batch-size", "10", "--concurrency", "4", "--poll-interval", "0.05")
    proc = start_cli(tmp_path, inp, out, config, *args)
    wait_until(lambda: len(upstreams.claude.batches.all) >= 2 and len(upstreams.vllm.received) >= 30, proc)
    kill(proc)
    assert not out.exists()
    store = Store(Path(f"{out}.state"))
    committed = store.counts().get("live_done", 0)  # live items the killed run had committed as done
    store.close()
    submitted_before = len(upstreams.claude.batches.submitted_custom_ids())
    live_before = len(upstreams.vllm.received)
    assert 20 <= submitted_before < n // 3
    assert live_before < n - n // 3

    upstreams.claude.batches.held = False
    result = run_batch_cli(inp, out, config, *args)
    assert result.exit_code == 0, result.output

    lines = read_jsonl(out)
    assert [line["custom_id"] for line in lines] == [item["custom_id"] for item in mixed(n)]
    assert {line["tiergate"]["outcome"] for line in lines} == {"succeeded"}
    closed = [line for line in lines if line["custom_id"].startswith("c")]
    assert all(line["tiergate"]["message_batch"] for line in closed)
    custom_ids = upstreams.claude.batches.submitted_custom_ids()
    assert len(custom_ids) == len(set(custom_ids)) == len(closed)  # no item submitted twice
    # every live item answered; sent again only if the killed run had not committed it as done (in flight at the
    # kill, or answered since the last checkpoint): never one the state file holds as done
    prompts = [str(r.body["messages"][-1]["content"]) for r in upstreams.vllm.received if r.body]
    assert set(prompts) == {item["body"]["messages"][-1]["content"] for item in mixed(n) if "body" in item}
    assert len(prompts) - len(set(prompts)) <= live_before - committed
    ids = ledger_request_ids(tmp_path)
    assert len(ids) == len(set(ids)) == n  # every item once in the ledger


def test_killed_while_its_batch_was_created_adopts_that_batch(tmp_path: Path, upstreams: Upstreams) -> None:
    """The kill falls between the API creating the batch and the run recording its id: the next run finds the
    batch among the account's batches and adopts it instead of submitting its items again."""
    upstreams.claude.batches.hang_create = True
    config = write_config(tmp_path, upstreams)
    inp, out = write_items(tmp_path / "in.jsonl", mixed(12)), tmp_path / "out.jsonl"
    proc = start_cli(tmp_path, inp, out, config, "--poll-interval", "0.05")
    wait_until(lambda: len(upstreams.claude.batches.all) == 1, proc)
    kill(proc)
    upstreams.claude.batches.release_create()

    result = run_batch_cli(inp, out, config)
    assert result.exit_code == 0, result.output
    assert len(upstreams.claude.batches.all) == 1
    creates = [r for r in upstreams.claude.received if r.method == "POST" and r.path == "/v1/messages/batches"]
    assert len(creates) == 1
    lines = read_jsonl(out)
    assert [line["custom_id"] for line in lines] == [item["custom_id"] for item in mixed(12)]
    assert {line["tiergate"]["message_batch"] for line in lines if line["custom_id"].startswith("c")} == {
        upstreams.claude.batches.all[0].id
    }
    assert len(set(ledger_request_ids(tmp_path))) == 12


def test_a_create_that_failed_is_submitted_once_it_is_known_not_made(tmp_path: Path, upstreams: Upstreams) -> None:
    upstreams.claude.batches.fail_creates = 1  # a 529: the run cannot know at once whether a batch was made
    config = write_config(tmp_path, upstreams)
    inp, out = write_items(tmp_path / "in.jsonl", mixed(6)), tmp_path / "out.jsonl"
    result = run_batch_cli(inp, out, config)
    assert result.exit_code == 0, result.output
    creates = [r for r in upstreams.claude.received if r.method == "POST" and r.path == "/v1/messages/batches"]
    assert len(creates) == 2
    assert len(upstreams.claude.batches.all) == 1
    assert all(line["tiergate"]["outcome"] == "succeeded" for line in read_jsonl(out))


async def test_a_run_cancelled_in_flight_then_resumed_writes_each_ledger_row_once(
    tmp_path: Path, upstreams: Upstreams, ledger_url: str
) -> None:
    """Ctrl-C (the run's task cancelled) may land inside a ledger write: the rows are neither lost nor doubled,
    on SQLite and on PostgreSQL."""
    upstreams.vllm.delay_s = 0.01
    n = 400
    config = load_config(write_config(tmp_path, upstreams, ledger={"url": ledger_url}))
    inp, out = write_items(tmp_path / "in.jsonl", mixed(n)), tmp_path / "out.jsonl"
    options = BatchOptions(inp, out, concurrency=8, batch_size=50, poll_interval_s=0.05)

    run = asyncio.create_task(run_batch(config, options))
    await asyncio.to_thread(upstreams.vllm.wait_for_requests, n // 3, 60.0)
    run.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await run
    assert not out.exists()
    report = await run_batch(config, options)
    assert report.output == out
    assert len(read_jsonl(out)) == n
    ledger = Ledger(ledger_url)
    await ledger.start(writer=False)
    try:
        rows = await ledger.rows()
    finally:
        await ledger.close()
    assert len({r.request_id for r in rows}) == len(rows) == n
    assert {r.batch for r in rows} == {report.run}
