"""``tiergate doctor``: what the embedded engine runs with on this machine, and whether it works.

For each embedded backend: the engine build (instruction sets compiled in, checked against this CPU and the
portable build the project requires), the CPU, the model file, the context size, and a real self-test in a
worker process (a crash there is reported, never fatal). Exit 1 when something would fail at serve time.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from tiergate.backends.engine import build
from tiergate.config import EmbeddedConfig, load_config
from tiergate.errors import ConfigError

JSON = dict[str, Any]


def engine_build() -> JSON:
    """The installed engine's build, read in a child process (a build that crashes cannot take doctor down)."""
    cmd = [sys.executable, "-m", "tiergate.backends.engine.worker", "--info"]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return {"error": f"could not run the engine: {exc}"}
    if done.returncode != 0:
        from tiergate.backends.engine.supervisor import describe_exit

        last = done.stderr.strip().splitlines()[-1:] or [""]
        return {"error": f"the engine failed to load ({describe_exit(done.returncode)}): {last[0]}"}
    info: JSON = json.loads(done.stdout)
    arch = build.machine()
    compiled = build.parse_system_info(info["system_info"])
    flags = build.cpu_flags()
    info |= {
        "arch": arch,
        "isa": sorted(build.isa(compiled, arch)),
        "not_portable": build.portable_problems(compiled, arch),
        "cpu_lacks": build.unsupported(compiled, flags, arch),
        "load_plan": build.plan(compiled).reason,
    }
    return info


def cpu() -> JSON:
    flags = build.cpu_flags()
    known = set(build.X86_FLAGS.values()) | set(build.ARM_FLAGS.values())
    return {"model": build.cpu_model(), "arch": build.machine(), "features": sorted(flags & known)}


async def self_test(config: EmbeddedConfig) -> JSON:
    from tiergate.backends.embedded import EmbeddedBackend

    backend = EmbeddedBackend(config)
    try:
        await backend.start()
        engine = backend.engine
        assert engine is not None
        out: JSON = {"backend": config.name, "model_path": str(backend.path), "state": engine.state}
        if backend.path is not None:
            out["model_bytes"] = backend.path.stat().st_size
        if engine.state == "ready":
            keys = ("n_ctx", "n_ctx_train", "n_threads", "load_s", "self_test_s", "extra_buffers_reason")
            out |= {k: engine.info[k] for k in keys if k in engine.info}
        else:
            out["reason"] = engine.reason
        return out
    finally:
        await backend.close()


def doctor(
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help="tiergate.yaml (default: $TIERGATE_CONFIG)")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object instead of text.")] = False,
) -> None:
    """Check the embedded engine on this machine: build, CPU, model, context, and a self-test."""
    try:
        cfg = load_config(config)
    except ConfigError as exc:
        typer.echo(f"tiergate: {exc}", err=True)
        raise typer.Exit(2) from None
    report: JSON = {"engine": engine_build(), "cpu": cpu(), "backends": []}
    for backend in cfg.backends:
        if not isinstance(backend, EmbeddedConfig):
            report["backends"].append({"backend": backend.name, "kind": backend.kind, "state": "not checked"})
            continue
        try:
            report["backends"].append(asyncio.run(self_test(backend)))
        except (ConfigError, FileNotFoundError) as exc:
            report["backends"].append({"backend": backend.name, "state": "down", "reason": str(exc)})
    engine = report["engine"]
    failed = "error" in engine or bool(engine.get("cpu_lacks"))
    failed |= any(b["state"] not in ("ready", "not checked") for b in report["backends"])
    if as_json:
        typer.echo(json.dumps(report, indent=2))
    else:
        typer.echo(render(report))
    raise typer.Exit(1 if failed else 0)


def render(report: JSON) -> str:
    engine, machine = report["engine"], report["cpu"]
    lines = []
    if "error" in engine:
        lines.append(f"engine     FAILED: {engine['error']}")
    else:
        lines.append(f"engine     {engine['engine']}: {engine['system_info']}")
        verdict = "portable" if not engine["not_portable"] else "NOT portable: " + "; ".join(engine["not_portable"])
        lines.append(f"build      {verdict}")
        if engine["cpu_lacks"]:
            lines.append(f"           this CPU lacks {', '.join(engine['cpu_lacks'])}: the engine would crash (SIGILL)")
        lines.append(f"load plan  {engine['load_plan']}")
    lines.append(f"cpu        {machine['model']} ({machine['arch']}): {' '.join(machine['features']) or 'unknown'}")
    for b in report["backends"]:
        if b["state"] == "ready":
            size = f" ({b['model_bytes'] / 1e6:.0f} MB)" if "model_bytes" in b else ""
            lines.append(f"backend    {b['backend']}: {b['model_path']}{size}")
            lines.append(
                f"           n_ctx {b['n_ctx']} (trained {b['n_ctx_train']}), {b['n_threads']} threads; "
                f"self-test passed (load {b['load_s']:.2f}s, generation {b['self_test_s']:.2f}s)"
            )
        elif b["state"] == "not checked":
            lines.append(f"backend    {b['backend']}: kind {b['kind']}, not checked here")
        else:
            lines.append(f"backend    {b['backend']}: FAILED: {b.get('reason')}")
    return "\n".join(lines)


def register(app: typer.Typer) -> None:
    app.command("doctor")(doctor)
