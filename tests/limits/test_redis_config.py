"""``redis:`` in tiergate.yaml and ``$TIERGATE_REDIS_URL``: the environment wins, the other fields stay; a wrong
value is one line naming it; which limiter each configuration gets."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from tiergate.config import load_config, parse_config
from tiergate.errors import ConfigError
from tiergate.limits import LocalLimiter, SharedLimiter, build_limiter


def test_the_environment_names_redis_over_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "tiergate.yaml"
    path.write_text("redis: {url: 'redis://file:6379/0', on_unavailable: {budget: open}, local_share: 0.5}\n")
    assert load_config(path).redis is not None
    monkeypatch.setenv("TIERGATE_REDIS_URL", "redis://env:6379/1")
    redis = load_config(path).redis
    assert redis is not None
    assert (redis.url, redis.on_unavailable.budget, redis.on_unavailable.rate, redis.local_share) == (
        "redis://env:6379/1",
        "open",
        "local",
        0.5,
    )
    path.write_text("server: {port: 9000}\n")
    assert load_config(path).redis == parse_config({"redis": {"url": "redis://env:6379/1"}}).redis  # turned on


def test_a_wrong_redis_setting_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "tiergate.yaml"
    for text, expected in [
        ("redis: {}", "redis.url: required field is missing; add it"),
        ("redis: {url: 'http://x'}", "redis.url: String should match pattern"),
        ("redis: {url: 'redis://x', on_unavailable: {budget: local}}", "redis.on_unavailable.budget: Input should be"),
        ("redis: {url: 'redis://x', local_share: 0}", "redis.local_share: Input should be greater than 0"),
    ]:
        path.write_text(text)
        with pytest.raises(ConfigError) as info:
            load_config(path)
        assert expected in str(info.value)
        assert "\n" not in str(info.value)
    monkeypatch.setenv("TIERGATE_REDIS_URL", "localhost:6379")
    monkeypatch.chdir(tmp_path)  # no ./tiergate.yaml: the defaults, then the environment
    path.unlink()
    with pytest.raises(ConfigError, match="TIERGATE_REDIS_URL='localhost:6379': String should match pattern"):
        load_config(None)


def test_each_configuration_gets_its_limiter() -> None:
    keys = [{"name": "team", "key": "sk", "requests_per_minute": 5}]
    local = build_limiter(parse_config({"keys": keys}), CollectorRegistry())
    assert isinstance(local, LocalLimiter)
    assert local.status() == {"store": "process"}
    config = parse_config({"keys": keys, "redis": {"url": "redis://127.0.0.1:1/0"}, "dispatch": {"deadline_s": 40}})
    shared = build_limiter(config, CollectorRegistry())
    assert isinstance(shared, SharedLimiter)
    assert shared.status()["reservation_ttl_s"] == 100.0  # dispatch.deadline_s + 60
