"""The installed engine is the portable build the project requires, and the worker's load plan keeps llama.cpp's
AMX kernels (which crash on Sapphire Rapids class CPUs) out of the way of any build that has them."""

from __future__ import annotations

from pathlib import Path

import pytest

from tiergate.backends.engine import build
from tiergate.cli.doctor import engine_build

# What llama.cpp 0.3.36 reports for three builds: requirements/engine.txt's (GGML_NATIVE=OFF), a native build on
# an AVX-512 machine (this one), and a native build on a Sapphire Rapids CPU (the crash of issue 12).
PORTABLE = "CPU : SSE3 = 1 | SSSE3 = 1 | AVX = 1 | AVX2 = 1 | F16C = 1 | FMA = 1 | BMI2 = 1 | OPENMP = 1 | REPACK = 1 |"
NATIVE_ZEN4 = PORTABLE.replace("BMI2 = 1", "BMI2 = 1 | AVX512 = 1 | AVX512_VBMI = 1 | AVX512_VNNI = 1")
NATIVE_SPR = NATIVE_ZEN4 + " AMX_INT8 = 1 |"
ARM_PORTABLE = "CPU : NEON = 1 | ARM_FMA = 1 | OPENMP = 1 | REPACK = 1 |"


def test_the_installed_engine_is_the_portable_build_and_runs_on_this_cpu() -> None:
    info = engine_build()
    assert "error" not in info, info
    assert info["not_portable"] == [], (
        f"the installed llama-cpp-python was built natively ({info['system_info']}); reinstall it with "
        "pip install --force-reinstall --no-cache-dir -r requirements/engine.txt"
    )
    assert info["cpu_lacks"] == []
    if info["arch"] == "x86_64":
        assert set(info["isa"]) == build.PORTABLE["x86_64"]


@pytest.mark.parametrize(
    ("system_info", "arch", "problems"),
    [
        (PORTABLE, "x86_64", []),
        (NATIVE_ZEN4, "x86_64", ["AVX512", "AVX512_VBMI", "AVX512_VNNI"]),
        (NATIVE_SPR, "x86_64", ["AMX_INT8", "AVX512", "AVX512_VBMI", "AVX512_VNNI"]),
        (ARM_PORTABLE, "aarch64", []),
        (ARM_PORTABLE.replace("ARM_FMA = 1", "ARM_FMA = 1 | DOTPROD = 1 | SVE = 1"), "aarch64", ["DOTPROD", "SVE"]),
    ],
)
def test_a_native_build_is_told_apart_from_the_portable_one(system_info: str, arch: str, problems: list[str]) -> None:
    found = build.portable_problems(build.parse_system_info(system_info), arch)
    assert [p.split()[0] for p in found] == problems
    assert all("requirements/engine.txt" in p for p in found)


def test_a_build_with_amx_kernels_loads_without_the_amx_buffers() -> None:
    assert build.plan(build.parse_system_info(NATIVE_SPR)).use_extra_buffers is False
    assert build.plan(build.parse_system_info(NATIVE_ZEN4)).use_extra_buffers is True
    assert build.plan(build.parse_system_info(PORTABLE)).use_extra_buffers is True


def test_instructions_the_cpu_lacks_are_named(tmp_path: Path) -> None:
    haswell = tmp_path / "cpuinfo"
    haswell.write_text("processor : 0\nflags : fpu sse2 pni ssse3 avx avx2 f16c fma bmi2\n")
    flags = build.cpu_flags(haswell)
    assert build.unsupported(build.parse_system_info(PORTABLE), flags, "x86_64") == []
    lacks = build.unsupported(build.parse_system_info(NATIVE_SPR), flags, "x86_64")
    assert lacks == ["AMX_INT8", "AVX512", "AVX512_VBMI", "AVX512_VNNI"]
    graviton = tmp_path / "arm"
    graviton.write_text("processor : 0\nFeatures : fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics asimddp\n")
    assert build.unsupported(build.parse_system_info(ARM_PORTABLE), build.cpu_flags(graviton), "aarch64") == []


@pytest.mark.slow
def test_the_worker_keeps_weights_out_of_amx_buffers_when_the_build_has_amx(monkeypatch: pytest.MonkeyPatch) -> None:
    import threading

    import llama_cpp.llama_cpp as raw

    from tiergate.backends.embedded import default_model_path
    from tiergate.backends.engine.worker import SELF_TEST, Engine

    monkeypatch.setattr(raw, "llama_print_system_info", lambda: NATIVE_SPR.encode())
    monkeypatch.setattr(raw, "llama_model_default_params", raw.llama_model_default_params)  # restored after
    engine = Engine({"model_path": str(default_model_path()), "n_ctx": 512})
    try:
        assert engine.llm.model_params.use_extra_bufts is False
        assert engine.info()["extra_buffers"] is False
        events = list(engine.generate({"id": 0, **SELF_TEST}, threading.Event()))
        assert events[-1]["event"] == "end"
        assert events[-1]["completion_tokens"] >= 1
    finally:
        engine.llm.close()


@pytest.mark.slow
def test_doctor_reports_build_cpu_model_context_and_a_passed_self_test() -> None:
    import json

    from typer.testing import CliRunner

    from tiergate.cli import build_app

    result = CliRunner().invoke(build_app(), ["doctor", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["engine"]["not_portable"] == []
    assert report["cpu"]["arch"] == build.machine()
    [local] = report["backends"]
    assert local["state"] == "ready"
    assert local["model_path"].endswith(".gguf")
    assert local["n_ctx"] == local["n_ctx_train"] == 8192
    text = CliRunner().invoke(build_app(), ["doctor"]).output
    assert "build      portable" in text
    assert "self-test passed" in text
