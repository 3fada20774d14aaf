"""An OpenAI-compatible upstream exercised against a real server: llama.cpp's own, with the same GGUF."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator

import anthropic
import httpx
import openai
import pytest

from tests.conftest import serve_gateway
from tests.support.servers import free_port
from tiergate.backends.embedded import default_model_path
from tiergate.config import parse_config


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    log_path = tmp_path_factory.mktemp("llama") / "server.log"
    cmd = [
        sys.executable,
        "-m",
        "llama_cpp.server",
        "--model",
        str(default_model_path()),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--n_ctx",
        "1024",
        "--model_alias",
        "smollm2",
    ]
    log = log_path.open("wb")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"llama_cpp.server exited: {log_path.read_text()[-2000:]}")
            try:
                if httpx.get(url + "/v1/models", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.25)
        else:
            raise TimeoutError("llama_cpp.server did not start")
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        log.close()


@pytest.fixture(scope="module")
def gateway(llama_server: str) -> Iterator[str]:
    backends = [
        {"name": "llamacpp", "tier": "open", "kind": "openai", "base_url": llama_server + "/v1", "model": "smollm2"}
    ]
    with serve_gateway(parse_config({"backends": backends})) as url:
        yield url


def test_openai_sdk_through_real_upstream(gateway: str) -> None:
    client = openai.OpenAI(base_url=gateway + "/v1", api_key="x", max_retries=0, timeout=120)
    raw = client.chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": "Name a colour."}], max_tokens=6
    )
    resp = raw.parse()
    assert raw.headers["x-tiergate-backend"] == "llamacpp"
    assert resp.choices[0].message.content
    assert resp.usage is not None
    assert resp.usage.completion_tokens > 0


def test_anthropic_sdk_streams_from_real_upstream(gateway: str) -> None:
    client = anthropic.Anthropic(base_url=gateway, api_key="x", max_retries=0, timeout=120)
    with client.messages.stream(
        model="open", max_tokens=6, messages=[{"role": "user", "content": "Say hello."}]
    ) as stream:
        final = stream.get_final_message()
    assert final.content[0].type == "text"
    assert final.content[0].text
    assert final.stop_reason in ("end_turn", "max_tokens")
    assert final.usage.output_tokens > 0


def test_health_of_real_upstream(gateway: str) -> None:
    assert httpx.get(gateway + "/readyz").json()["backends"]["llamacpp"]["healthy"] is True
