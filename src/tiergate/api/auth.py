"""API keys: ``Authorization: Bearer KEY`` or ``x-api-key: KEY``, mapped to a :class:`Caller`."""

from __future__ import annotations

import hmac
from collections.abc import Callable, Mapping

from tiergate.config import KeyConfig
from tiergate.errors import AuthenticationFailed, ConfigError
from tiergate.pipeline.gateway import Caller


def _never(name: str) -> bool:
    return False


class KeyRing:
    """``revoked``: whether a key was revoked at run time (by name; ``tiergate keys revoke``, shared limits)."""

    def __init__(self, keys: list[KeyConfig], *, revoked: Callable[[str], bool] = _never) -> None:
        self._revoked = revoked
        self._callers: list[tuple[bytes, Caller]] = []
        for k in keys:
            secret = k.secret()
            if secret is None:
                raise ConfigError(
                    f"keys.{k.name}: environment variable {k.key_env} is not set; export it or remove the key"
                )
            caller = Caller(name=k.name, sovereign=k.sovereign, default_tier=k.default_tier)
            self._callers.append((secret.encode(), caller))

    def caller(self, headers: Mapping[str, str]) -> Caller:
        if not self._callers:
            return Caller()
        presented = headers.get("x-api-key")
        auth = headers.get("authorization", "")
        if presented is None and auth[:7].lower() == "bearer ":
            presented = auth[7:].strip()
        if not presented:
            raise AuthenticationFailed("missing API key: send 'Authorization: Bearer KEY' or 'x-api-key: KEY'")
        given = presented.encode()
        for secret, caller in self._callers:
            if hmac.compare_digest(secret, given):
                if self._revoked(caller.name):
                    raise AuthenticationFailed("this API key has been revoked")
                return caller
        raise AuthenticationFailed("invalid API key")
