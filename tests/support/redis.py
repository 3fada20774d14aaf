"""Redis for tests: the shared server in ``$TIERGATE_TEST_REDIS_URL`` (``scripts/start-redis.sh`` starts one and
prints that URL), with a key prefix per test, or a private ``redis-server`` that a test may kill and restart."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.support.servers import free_port

REDIS_ENV = "TIERGATE_TEST_REDIS_URL"


def redis_base_url() -> str:
    url = os.environ.get(REDIS_ENV)
    if not url:
        pytest.skip(f"{REDIS_ENV} is not set; run: export {REDIS_ENV}=$(scripts/start-redis.sh)")
    return url


def unique_prefix() -> str:
    """A namespace of its own for one test on the shared server."""
    return f"t{uuid.uuid4().hex[:12]}"


class RedisServer:
    """A ``redis-server`` of one test's own on a loopback port, nothing on disk: killed, it forgets everything."""

    def __init__(self, workdir: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.skip("redis-server is not installed; scripts/start-redis.sh installs it")
        self.binary = binary
        self.port = free_port()
        self.workdir = workdir
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        argv = [self.binary, "--bind", "127.0.0.1", "--port", str(self.port), "--save", "", "--appendonly", "no"]
        argv += ["--dir", str(self.workdir)]
        log = (self.workdir / "redis.log").open("ab")
        self.process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        log.close()
        client = redis.Redis(port=self.port, socket_timeout=1)
        deadline = time.monotonic() + 10
        while True:
            try:
                if client.ping():
                    break
            except redis.RedisError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    written = (self.workdir / "redis.log").read_text()
                    raise RuntimeError(f"redis-server did not start: {written}") from None
                time.sleep(0.02)
        client.close()

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()


@contextlib.contextmanager
def private_redis(workdir: Path) -> Iterator[RedisServer]:
    server = RedisServer(workdir)
    server.start()
    try:
        yield server
    finally:
        server.kill()
