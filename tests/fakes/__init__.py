"""Faithful fake upstreams for tests and benchmarks: Anthropic's Messages API and an
OpenAI-compatible Chat Completions server (vLLM / llama.cpp), scriptable per request.

See ``fake_anthropic.py``, ``fake_openai.py`` and ``script.py`` for the details; ``blackhole.py`` is an
address whose connects hang (neither accepted nor refused).
"""

from tests.fakes.blackhole import blackhole
from tests.fakes.fake_anthropic import FakeAnthropic
from tests.fakes.fake_openai import FakeOpenAI
from tests.fakes.script import (
    SCRIPT_HEADER,
    AbortConnection,
    ContextLength,
    CutStream,
    Delay,
    FakeUpstream,
    Fault,
    Hang,
    MalformedStream,
    RecordedRequest,
    Refusal,
    Reply,
    ScriptError,
    SlowFirstToken,
    StallStream,
    Step,
    StreamError,
    script_header,
    script_marker,
    step_from_json,
    step_to_json,
)

__all__ = [
    "SCRIPT_HEADER",
    "AbortConnection",
    "ContextLength",
    "CutStream",
    "Delay",
    "FakeAnthropic",
    "FakeOpenAI",
    "FakeUpstream",
    "Fault",
    "Hang",
    "MalformedStream",
    "RecordedRequest",
    "Refusal",
    "Reply",
    "ScriptError",
    "SlowFirstToken",
    "StallStream",
    "Step",
    "StreamError",
    "blackhole",
    "script_header",
    "script_marker",
    "step_from_json",
    "step_to_json",
]
