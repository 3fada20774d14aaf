"""Backend kinds, by name. Built-in kinds register through the same path as any plug-in would.

>>> registry = default_registry()
>>> sorted(registry)
['anthropic', 'bedrock', 'embedded', 'openai', 'vertex']
"""

from __future__ import annotations

from tiergate.backends.base import Backend, BackendFactory, Capabilities
from tiergate.config import BackendConfig
from tiergate.errors import ConfigError


def default_registry() -> dict[str, BackendFactory]:
    from tiergate.backends import anthropic, embedded, openai_compat

    registry: dict[str, BackendFactory] = {}
    for module in (embedded, openai_compat, anthropic):
        module.register(registry.__setitem__)
    return registry


def build_backend(config: BackendConfig, registry: dict[str, BackendFactory]) -> Backend:
    try:
        factory = registry[config.kind]
    except KeyError:
        kinds = ", ".join(sorted(registry))
        raise ConfigError(f"backends.{config.name}.kind: unknown kind {config.kind!r}; use one of: {kinds}") from None
    return factory(config)


__all__ = ["Backend", "BackendFactory", "Capabilities", "build_backend", "default_registry"]
