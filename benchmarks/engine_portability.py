"""Does each engine build run on a CPU it was not built on? The worker, under QEMU's user-mode emulation of older CPUs.

    apt-get install qemu-user
    python benchmarks/engine_portability.py --native-python /path/to/python-with-native-llama-cpp \\
        [--out docs/benchmarks-engine-portability.md]

For each build (this interpreter's llama-cpp-python, built by ``requirements/engine.txt``; and a native
build) and each emulated CPU (``qemu-x86_64 -cpu NAME``: Haswell, an x86-64-v3 CPU; ``max``, everything QEMU's
TCG emulates, which is about the same level: no AVX-512, no AMX), the embedded engine's worker is started
exactly as the gateway starts it (model load and self-test), then asked for one short answer. QEMU emulates
instructions (slowly: tens of seconds a run), so a build that holds an instruction the emulated CPU lacks dies
with SIGILL, as it would on such a machine. TCG has no AMX, so the AMX crash itself cannot be reproduced here
(``tests/backends/test_engine_build.py`` covers the load plan that avoids it).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import subprocess
import sys
from pathlib import Path

from tiergate.backends.engine.supervisor import describe_exit

ROOT = Path(__file__).resolve().parents[1]
CPUS = ["Haswell-v4", "max"]
JOB = {"op": "generate", "id": 1, "messages": [{"role": "user", "content": "Name three colours."}], "max_tokens": 8}


def run(python: str, cpu: str, model: str) -> str:
    settings = json.dumps({"model_path": model, "n_ctx": 512, "n_threads": 1})
    cmd = ["qemu-x86_64", "-cpu", cpu, python, "-m", "tiergate.backends.engine.worker", settings]
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert proc.stdin is not None
    assert proc.stdout is not None
    events = []
    try:
        ready = proc.stdout.readline()
        if ready:
            proc.stdin.write(json.dumps(JOB) + "\n")
            proc.stdin.flush()
            while line := proc.stdout.readline():
                events.append(json.loads(line))
                if events[-1].get("event") in ("end", "error"):
                    break
    finally:
        proc.stdin.close()
        code = proc.wait(600)
    if events and events[-1].get("event") == "end":
        text = "".join(e.get("text", "") for e in events)
        return f"self-test passed, answered {events[-1]['completion_tokens']} tokens ({text.strip()[:40]!r})"
    return f"**died: {describe_exit(code)}** {'before its self-test' if not ready else ''}".strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--native-python", help="a Python whose llama-cpp-python was built with -march=native")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks-engine-portability.md")
    args = parser.parse_args()
    if shutil.which("qemu-x86_64") is None:
        sys.exit("needs qemu-x86_64: apt-get install qemu-user")
    from tiergate.backends.embedded import default_model_path
    from tiergate.backends.engine.build import cpu_model

    model = str(default_model_path())
    builds = {"portable (requirements/engine.txt)": sys.executable}
    if args.native_python:
        builds[f"native (-march=native on {cpu_model()})"] = args.native_python
    lines = [
        "# Benchmarks: the engine build on CPUs it was not built on",
        "",
        f"Measured {dt.date.today().isoformat()} by `python benchmarks/engine_portability.py`: the embedded "
        "engine's worker under `qemu-x86_64 -cpu NAME` (user-mode emulation), model load, self-test and one answer.",
        "",
        "| build | " + " | ".join(f"emulated {c}" for c in CPUS) + " |",
        "|---|" + "---|" * len(CPUS),
    ]
    for label, python in builds.items():
        cells = [run(python, cpu, model) for cpu in CPUS]
        print(label, cells, flush=True)
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    args.out.write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
