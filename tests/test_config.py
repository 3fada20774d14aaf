"""tiergate.yaml: typed, strict, and a wrong file fails with one line naming the field and the fix."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tiergate.cli.serve import resolve
from tiergate.config import Config, OpenAIConfig, load_config, parse_config
from tiergate.errors import ConfigError
from tiergate.types import Tier

DESIGN_EXAMPLE = """
server: {host: 127.0.0.1, port: 8787}
backends:
  - name: local
    tier: open
    kind: embedded
    model_path: null
    cost: {gpu_hourly_usd: 0.0, tokens_per_second: 40}
  - name: vllm-a
    tier: open
    kind: openai
    base_url: http://gpu-1:8000/v1
    model: meta-llama/Llama-3.1-8B-Instruct
    cost: {gpu_hourly_usd: 2.69, tokens_per_second: 3400}
  - name: claude
    tier: closed
    kind: anthropic
    model: claude-sonnet-4-5
    api_key_env: ANTHROPIC_API_KEY
    base_url: null
    price: {input_per_mtok: 3.0, output_per_mtok: 15.0}
router: {kind: rules, strong_share: 0.3}
policy:
  sovereignty: {markers: ["CONFIDENTIAL"], pii: [EMAIL_ADDRESS, PHONE_NUMBER, IBAN_CODE, CREDIT_CARD, US_SSN]}
  guard: {enabled: true, on_flag: closed}
  failover: {closed_to_open: true, open_to_closed: true}
keys:
  - {name: hr-app, key_env: HR_APP_KEY, sovereign: true, budget_usd_per_month: 500}
ledger: {url: "sqlite:///tiergate.db"}
"""


def test_no_file_means_embedded_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TIERGATE_CONFIG", raising=False)
    config = load_config()
    assert [(b.name, b.kind, b.tier) for b in config.backends] == [("local", "embedded", Tier.OPEN)]
    assert (config.server.host, config.server.port) == ("127.0.0.1", 8787)


def test_design_example_loads(tmp_path: Path) -> None:
    path = tmp_path / "tiergate.yaml"
    path.write_text(DESIGN_EXAMPLE)
    config = load_config(path)
    assert [b.name for b in config.backends] == ["local", "vllm-a", "claude"]
    assert config.backends[2].price is not None
    assert config.backends[2].price.output_per_mtok == 15.0
    assert config.keys[0].sovereign is True
    assert config.backends[0].in_perimeter
    assert not config.backends[2].in_perimeter


def test_env_var_names_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "other.yaml"
    path.write_text("server: {port: 9999}\n")
    monkeypatch.setenv("TIERGATE_CONFIG", str(path))
    assert load_config().server.port == 9999


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("server: {prot: 80}", "server.prot: unknown field; remove it or check its spelling"),
        ("server: {port: eighty}", "server.port: Input should be a valid integer"),
        ("backends: [{name: a, kind: openai}]", "backends.0.tier: required field is missing; add it"),
        ("backends: [{name: a, tier: middle, kind: openai}]", "backends.0.tier: Input should be 'open' or 'closed'"),
        ("router: {kind: learned, threshold: 7}", "router.threshold: Input should be less than or equal to 1"),
        ("keys: [{name: k}]", "keys.0: Value error, give exactly one of 'key' or 'key_env'"),
        ("- just\n- a list", "the top level must be a mapping"),
        ("server: {port: [1, 2}", "not valid YAML at line 1"),
        (
            "backends: [{name: a, tier: open, kind: embedded}, {name: a, tier: open, kind: embedded}]",
            "backend names must be unique; repeated: a",
        ),
    ],
)
def test_wrong_file_names_field_and_fix(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "tiergate.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(str(path))
    assert expected in message


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the config file"):
        load_config(tmp_path / "nope.yaml")


def test_precedence_argument_env_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "tiergate.yaml"
    path.write_text("server: {port: 7001}\n")
    assert resolve(path, None, None).server.port == 7001
    monkeypatch.setenv("TIERGATE_PORT", "7002")
    assert resolve(path, None, None).server.port == 7002
    assert resolve(path, None, 7003).server.port == 7003


def test_public_bind_needs_keys() -> None:
    with pytest.raises(ConfigError, match="without API keys"):
        resolve(None, "0.0.0.0", None)


def test_unknown_backend_kind_fails_at_start() -> None:
    from tiergate.api.app import build_state

    config = parse_config({"backends": [{"name": "x", "tier": "open", "kind": "tgi-magic"}]})
    with pytest.raises(ConfigError, match=r"backends.x.kind: unknown kind 'tgi-magic'; use one of: anthropic"):
        build_state(config)


@pytest.mark.parametrize(
    ("backend", "expected"),
    [
        ("{name: a, tier: open, kind: embedded, modle_path: x.gguf}", "backends.0.modle_path: unknown field"),
        ("{name: a, tier: open, kind: openai, model: m}", "backends.0.base_url: required field is missing; add it"),
        ("{name: a, tier: open, kind: tgi-magic}", "backends.a.kind: unknown kind 'tgi-magic'; use one of: anthropic"),
    ],
)
def test_serve_with_wrong_file_prints_one_line(tmp_path: Path, backend: str, expected: str) -> None:
    path = tmp_path / "tiergate.yaml"
    path.write_text(f"backends: [{backend}]\n")
    proc = subprocess.run(
        [sys.executable, "-m", "tiergate", "serve", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "TIERGATE_CONFIG": ""},
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1
    assert expected in lines[0]


def test_each_kind_has_its_own_fields() -> None:
    vllm = {"name": "v", "tier": "open", "kind": "openai", "base_url": "http://x/v1"}
    with pytest.raises(ConfigError, match=r"backends.0.n_ctx: unknown field for kind 'openai'"):
        parse_config({"backends": [{**vllm, "n_ctx": 512}]})
    config = parse_config({"backends": [vllm]})
    assert isinstance(config.backends[0], OpenAIConfig)
    assert config.backends[0].base_url == "http://x/v1"


def test_a_plug_in_kind_keeps_its_own_fields_for_its_factory() -> None:
    entry = {"name": "p", "tier": "open", "kind": "my-server", "endpoint": "unix:///run/m.sock", "max_queue": 3}
    config = parse_config({"backends": [entry]}).backends[0]
    assert config.max_queue == 3  # the common fields are checked and typed
    assert config.model_extra == {"endpoint": "unix:///run/m.sock"}


def test_config_is_frozen() -> None:
    config = Config()
    with pytest.raises(ValueError, match="frozen"):
        config.server.port = 1  # type: ignore[misc]


def test_missing_gguf_fails_at_start_with_one_line(tmp_path: Path) -> None:
    from tiergate.api.app import build_state

    config = parse_config({"backends": [{"name": "l", "tier": "open", "kind": "embedded", "model_path": "/nope.gguf"}]})
    with pytest.raises(ConfigError, match=r"backends.l.model_path: /nope.gguf is not a file"):
        build_state(config)


async def test_any_gguf_can_be_configured(tmp_path: Path) -> None:
    from tiergate.backends.embedded import EmbeddedBackend, default_model_path
    from tiergate.config import EmbeddedConfig
    from tiergate.types import ChatRequest, Message

    copy = tmp_path / "my-model.Q4.gguf"
    copy.symlink_to(default_model_path())
    entry = {"name": "l", "tier": "open", "kind": "embedded", "model_path": str(copy), "n_threads": 1}
    config = parse_config({"backends": [entry]}).backends[0]
    assert isinstance(config, EmbeddedConfig)
    backend = EmbeddedBackend(config)
    await backend.start()
    try:
        answer = await backend.complete(ChatRequest(model="l", messages=[Message.text("user", "Hi")], max_tokens=3))
    finally:
        await backend.close()
    assert backend.model == "my-model"
    assert answer.model == "my-model"
    assert answer.usage.output_tokens > 0
