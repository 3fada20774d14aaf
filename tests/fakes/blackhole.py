"""An address that accepts no connection and refuses none: connecting to it hangs until the client gives up.

A listening socket whose accept queue is full and never drained: the kernel drops further SYNs (Linux with
``tcp_abort_on_overflow=0``, the default), so a connect neither succeeds nor is refused, like a host behind a
firewall that drops packets. Nothing leaves loopback.

Example::

    with blackhole() as url:          # "http://127.0.0.1:PORT"
        httpx.get(url, timeout=httpx.Timeout(5, connect=0.5))   # ConnectTimeout after 0.5 s
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator

PROBE_TIMEOUT_S = 0.2


@contextlib.contextmanager
def blackhole(max_fill: int = 64) -> Iterator[str]:
    """Yield ``http://127.0.0.1:PORT`` of a socket whose connects hang; checked before it is handed out."""
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    held: list[socket.socket] = []
    try:
        server.bind(("127.0.0.1", 0))
        server.listen(0)
        port = server.getsockname()[1]
        for _ in range(max_fill):  # fill the accept queue until a connect no longer completes
            probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            probe.settimeout(PROBE_TIMEOUT_S)
            try:
                probe.connect(("127.0.0.1", port))
            except TimeoutError:
                probe.close()
                break
            held.append(probe)
        else:
            raise RuntimeError(f"connects to a full accept queue still complete after {max_fill} tries")
        yield f"http://127.0.0.1:{port}"
    finally:
        for sock in held:
            sock.close()
        server.close()
