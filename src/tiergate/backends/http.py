"""What the HTTP backends share (the OpenAI-compatible client and the Anthropic SDK's): their timeouts.

Both clients are ``httpx2`` clients (the Anthropic SDK's HTTP library; tiergate's own client uses it too, so one
transport stack serves every upstream).
"""

from __future__ import annotations

import httpx2

from tiergate.config import BackendConfig


def timeouts(config: BackendConfig, total: float | None = None) -> httpx2.Timeout:
    """``connect_timeout_s`` to open a connection (never more than ``total``), ``total`` (default ``timeout_s``)
    for each read, write and pool wait. The dispatcher adds its own per-attempt limits.

    >>> t = timeouts(BackendConfig(name="b", tier="open", kind="openai", connect_timeout_s=0.5, timeout_s=30))
    >>> (t.connect, t.read)
    (0.5, 30.0)
    >>> timeouts(BackendConfig(name="b", tier="open", kind="openai", connect_timeout_s=9), total=5).connect
    5
    """
    total = config.timeout_s if total is None else total
    return httpx2.Timeout(total, connect=min(config.connect_timeout_s, total))
