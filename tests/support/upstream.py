"""Fake upstreams as processes of their own, for tests that load several gateway processes at once:

python -m uvicorn --factory tests.support.upstream:fake_openai --port 9000
"""

from __future__ import annotations

from tests.fakes import FakeOpenAI

MODEL = "fake-llama-8b"


def fake_openai() -> FakeOpenAI:
    return FakeOpenAI(models=[MODEL], reply_text="ok", record=False)
