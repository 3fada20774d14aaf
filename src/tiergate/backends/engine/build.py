"""What the installed llama.cpp build contains, and whether it is safe on this CPU.

llama.cpp reports the instruction sets it was *compiled* with (``llama_print_system_info``), e.g.
``CPU : SSE3 = 1 | SSSE3 = 1 | AVX = 1 | AVX2 = 1 | F16C = 1 | FMA = 1 | BMI2 = 1 | OPENMP = 1 | REPACK = 1``.
Two things can go wrong with a build made by ``-march=native`` (llama-cpp-python's default):

- it contains AMX code when built on a CPU that has AMX, and llama.cpp's AMX matrix kernels crash (SIGSEGV at
  ``ldtilecfg``) on Sapphire Rapids class CPUs: the worker then keeps weights out of the AMX buffers
  (:func:`plan`), so those kernels never run;
- it contains instructions another CPU lacks (a wheel built on one machine, run on another): SIGILL.

The project builds the engine portably (``requirements/engine.txt``: ``GGML_NATIVE=OFF``, which on x86-64
compiles SSE3 to AVX2 + FMA + F16C + BMI2 and on arm64 the armv8-a baseline); :func:`portable_problems` says
what in a build contradicts that.

>>> info = parse_system_info("CPU : SSE3 = 1 | AVX2 = 1 | AVX512 = 0 | AMX_INT8 = 1 | OPENMP = 1 | ")
>>> sorted(info)
['AMX_INT8', 'AVX2', 'OPENMP', 'SSE3']
>>> plan(info).use_extra_buffers
False
>>> portable_problems(info, "x86_64")
['AMX_INT8 is compiled in (a native build); rebuild with requirements/engine.txt']
"""

from __future__ import annotations

import platform
import re
from dataclasses import dataclass
from pathlib import Path

#: Instruction-set entries of llama.cpp's system info (others, such as OPENMP or REPACK, are not ISA features),
#: with the name the kernel gives the feature in /proc/cpuinfo.
X86_FLAGS = {
    "SSE3": "pni",
    "SSSE3": "ssse3",
    "AVX": "avx",
    "AVX_VNNI": "avx_vnni",
    "AVX2": "avx2",
    "F16C": "f16c",
    "FMA": "fma",
    "BMI2": "bmi2",
    "AVX512": "avx512f",
    "AVX512_VBMI": "avx512vbmi",
    "AVX512_VNNI": "avx512_vnni",
    "AVX512_BF16": "avx512_bf16",
    "AMX_INT8": "amx_int8",
    "AMX_BF16": "amx_bf16",
}
ARM_FLAGS = {
    "NEON": "asimd",
    "ARM_FMA": "asimd",
    "FP16_VA": "asimdhp",
    "DOTPROD": "asimddp",
    "MATMUL_INT8": "i8mm",
    "SVE": "sve",
    "SVE2": "sve2",
    "SME": "sme",
}
#: What the portable build compiles in: x86-64-v3 (Haswell, 2013; Zen, 2017) and the armv8-a baseline.
PORTABLE = {
    "x86_64": frozenset({"SSE3", "SSSE3", "AVX", "AVX2", "F16C", "FMA", "BMI2"}),
    "aarch64": frozenset({"NEON", "ARM_FMA"}),
}
AMX = frozenset({"AMX_INT8", "AMX_BF16"})
_ENTRY = re.compile(r"([A-Z][A-Z0-9_]*)\s*=\s*1\b")


def parse_system_info(text: str) -> frozenset[str]:
    """The entries llama.cpp reports as compiled in (``NAME = 1``)."""
    return frozenset(_ENTRY.findall(text))


def machine() -> str:
    arch = platform.machine().lower()
    return {"amd64": "x86_64", "arm64": "aarch64"}.get(arch, arch)


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> frozenset[str]:
    """The CPU's feature flags as the kernel reports them (x86 ``flags``, arm64 ``Features``); empty elsewhere."""
    try:
        text = cpuinfo.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


def cpu_model(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    try:
        text = cpuinfo.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return platform.processor() or "unknown"
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("model name", "Model", "CPU part"):
            return value.strip()
    return platform.processor() or "unknown"


def isa(compiled: frozenset[str], arch: str) -> frozenset[str]:
    """The instruction-set entries among ``compiled`` (for ``arch``)."""
    known = X86_FLAGS if arch == "x86_64" else ARM_FLAGS if arch == "aarch64" else {}
    return frozenset(compiled & known.keys())


def unsupported(compiled: frozenset[str], flags: frozenset[str], arch: str) -> list[str]:
    """Compiled-in instruction sets this CPU lacks (each would be a SIGILL), when the CPU's flags are known."""
    known = X86_FLAGS if arch == "x86_64" else ARM_FLAGS if arch == "aarch64" else {}
    if not flags:
        return []
    return sorted(name for name in compiled & known.keys() if known[name] not in flags)


def portable_problems(compiled: frozenset[str], arch: str) -> list[str]:
    """What in the build contradicts the portable configuration the project requires (empty: none)."""
    allowed = PORTABLE.get(arch)
    if allowed is None:
        return []
    extra = sorted(isa(compiled, arch) - allowed)
    return [f"{name} is compiled in (a native build); rebuild with requirements/engine.txt" for name in extra]


@dataclass(frozen=True, slots=True)
class LoadPlan:
    """How the worker loads the model on this build."""

    #: llama.cpp's extra weight buffers (AMX tiles, repacked Q4_0); off when the build holds AMX kernels.
    use_extra_buffers: bool
    reason: str


def plan(compiled: frozenset[str]) -> LoadPlan:
    if compiled & AMX:
        return LoadPlan(
            False,
            "the engine was compiled with AMX, whose matrix kernels crash on some CPUs "
            "(llama.cpp issue 20824): weights stay out of the AMX buffers",
        )
    return LoadPlan(True, "no AMX kernels in the build")
