"""The backend contract: every model server, in-process or remote, behind a few async methods.

    class Echo:
        def __init__(self, config: BackendConfig) -> None:
            self.config = config
            self.model = "echo"

        async def start(self) -> None: ...
        async def close(self) -> None: ...
        async def health(self) -> bool:
            return True

        def status(self) -> JSON:
            return {}

        async def complete(self, request: ChatRequest) -> ChatResponse:
            return ChatResponse("1", self.model, [TextPart(request.last_user_text())], StopReason.END_TURN, Usage())

        async def stream(self, request: ChatRequest) -> AsyncIterator[StreamEvent]:
            yield TextDelta(request.last_user_text())
            yield StreamEnd(StopReason.END_TURN, Usage())

Backends translate their transport's failures into :mod:`tiergate.errors` (``UpstreamError`` and
subclasses) at one boundary, so the dispatcher can decide on retries and failover without knowing kinds.
A backend kind registers a factory in :mod:`tiergate.backends` (``register("kind", factory)``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from tiergate.config import BackendConfig
from tiergate.types import JSON, ChatRequest, ChatResponse, EventStream


class Backend(Protocol):
    config: BackendConfig
    #: The model name this backend serves (reported in responses).
    model: str

    async def start(self) -> None:
        """Load models / open connection pools. Called once, in the app's lifespan."""

    async def close(self) -> None: ...

    async def health(self) -> bool:
        """A cheap liveness check of the upstream (no generation)."""
        ...

    def status(self) -> JSON:
        """What ``/readyz`` shows of this backend beyond health and circuit (e.g. a worker's state); ``{}``."""
        ...

    async def complete(self, request: ChatRequest) -> ChatResponse: ...

    def stream(self, request: ChatRequest) -> EventStream:
        """Yield events ending with exactly one ``StreamEnd``; raise ``UpstreamError`` on failure."""
        ...


BackendFactory = Callable[[BackendConfig], Backend]
