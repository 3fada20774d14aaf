"""The backend contract: every model server, in-process or remote, behind one protocol.

A backend has a ``config``, the ``model`` it serves, the :class:`Capabilities` it declares, and six methods:
``start`` / ``close`` (the app's lifespan), ``health`` and ``status`` (``/readyz``), ``complete`` and ``stream``
(a request), and ``count_tokens`` (called only where ``capabilities.counts_tokens`` says it answers).

    class Echo:
        capabilities = Capabilities()  # text only, no prefix continuation, no token counter

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

        async def count_tokens(self, request: ChatRequest) -> int:
            raise NotImplementedError  # capabilities.counts_tokens is False

Backends translate their transport's failures into :mod:`tiergate.errors` (``UpstreamError`` and
subclasses) at one boundary, so the dispatcher can decide on retries and failover without knowing kinds.
A backend kind registers a factory in :mod:`tiergate.backends` (``register("kind", factory)``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, TypeVar

from tiergate.config import BackendConfig
from tiergate.errors import ConfigError
from tiergate.types import JSON, ChatRequest, ChatResponse, Dialect, EventStream


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What a backend can do beyond answering text, declared by the backend and read by dispatch and the API.

    >>> Capabilities(counts_tokens=True).images, Capabilities(ignores=frozenset({"seed"})).ignores
    (False, frozenset({'seed'}))
    """

    #: Continues a final assistant turn given as a prefix: a stream that broke after bytes were sent is
    #: resumed on it (only the new part is streamed). Declared by the kind (:func:`continues`), overridden by
    #: the config's ``continues_prefix``; dispatch also learns it (a prefill rejection turns it off).
    continues_prefix: bool = False
    #: ``count_tokens`` answers with the backend's own count of a prompt (``/v1/messages/count_tokens``, and
    #: the input tokens of a stream cut before its usage).
    counts_tokens: bool = False
    #: Reads image parts (a backend that does not refuses a request carrying one with a 400 naming itself).
    images: bool = False
    #: Takes Anthropic's Message Batches (``POST /v1/messages/batches``) at the batch price: ``tiergate batch``
    #: submits the items it routes here as batches rather than one request each (:mod:`tiergate.batch`).
    message_batches: bool = False
    #: Returns token log probabilities (OpenAI's ``logprobs``): a request asking for them goes only to such a
    #: backend, and where none may take it, it is a 400 that says so.
    logprobs: bool = False
    #: Serves whatever Claude model a request names (:attr:`~tiergate.types.ChatRequest.claude_model`), as
    #: Anthropic's API does; Bedrock and Vertex serve their configured model.
    serves_named_models: bool = False
    #: Takes a caller's own body in this dialect (:class:`tiergate.types.Native`): nothing it carries is lost.
    native: Dialect | None = None
    #: Fields of :class:`~tiergate.types.ChatRequest` this backend has no use for (Claude: ``seed``): a request
    #: that sets one is answered without it, and the response says so (``x-tiergate-dropped``).
    ignores: frozenset[str] = frozenset()
    #: A non-streaming request is asked of it as a stream and gathered into the answer
    #: (:mod:`tiergate.dispatch.gather`), so the first-token budget and the stall timeout leave a silent backend as
    #: soon as for a stream. Declared by the kind, overridden by the config's ``complete_by_stream``
    #: (:func:`completes_by_stream`); off by default where the stream cannot give back the very answer a whole
    #: request would (the embedded model's own ``complete`` shapes forced tool calls and empty answers); never
    #: used for a caller's own body (:func:`takes_native`): Claude's message is taken as Claude sends it, within
    #: the whole-answer budget (:func:`tiergate.dispatch.retry.answer_budget`).
    complete_by_stream: bool = False


def takes_native(capabilities: Capabilities, request: ChatRequest) -> bool:
    """Does the backend get the caller's own body for ``request`` (and answer in the caller's dialect)? Where the
    request has one, the backend takes that dialect, and the content is still what the body says.

    >>> takes_native(Capabilities(), ChatRequest("auto", []))
    False
    """
    native = request.native
    return native is not None and capabilities.native is native.dialect and native.matches(request)


def continues(config: BackendConfig, default: bool) -> bool:
    """The prefix continuation a backend of this config declares: the config's ``continues_prefix`` where set,
    else the kind's ``default``.

    >>> continues(BackendConfig(name="b", tier="open", kind="x", continues_prefix=False), True)
    False
    """
    return default if config.continues_prefix is None else config.continues_prefix


def completes_by_stream(config: BackendConfig, default: bool) -> bool:
    """Whether a backend of this config gathers non-streaming answers from a stream: the config's
    ``complete_by_stream`` where set, else the kind's ``default``.

    >>> completes_by_stream(BackendConfig(name="b", tier="open", kind="x", complete_by_stream=False), True)
    False
    """
    return default if config.complete_by_stream is None else config.complete_by_stream


class Backend(Protocol):
    @property
    def config(self) -> BackendConfig:
        """The backend's configuration: the model of its kind (:data:`tiergate.config.BackendSpec`)."""
        ...

    #: The model name this backend serves (reported in responses).
    model: str
    capabilities: Capabilities

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

    async def count_tokens(self, request: ChatRequest) -> int:
        """The prompt's input tokens as this backend counts them; only where ``capabilities.counts_tokens``."""
        ...


BackendFactory = Callable[[BackendConfig], Backend]
C = TypeVar("C", bound=BackendConfig)


def config_of(config: BackendConfig, kind: type[C]) -> C:
    """``config`` as the model of the kind a factory builds, or a one-line :class:`ConfigError`."""
    if not isinstance(config, kind):
        raise ConfigError(f"backends.{config.name}.kind: {config.kind!r} has no {kind.__name__} configuration")
    return config
