"""Secret scrubbing: the one rule for every text or event that leaves mwai.

The agent's output, a run's error and comment texts, git's messages, an alert
notifier's failure and every Sentry event pass through a ``Scrubber`` holding
the secret values they could contain. Every non-empty secret is replaced, even
a short one (a 3-character password is still a password), the longest first so
that a secret containing another is replaced whole rather than leaving its
remainder. Sentry events are walked: nested dicts, lists and tuples, their keys
and values, and the values of credential headers (given by name) are blanked
whatever they hold, since a header like Authorization carries a secret the
settings do not know in that form.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

MARKER = "***"


class Scrubber:
    """Replaces the given secret values (and values under secret keys) by ``marker``."""

    def __init__(self, secrets: Iterable[str], *, marker: str = MARKER,
                 secret_keys: Iterable[str] = ()) -> None:
        # Longest first, so a secret containing another is replaced whole.
        self.secrets = sorted({s for s in secrets if s}, key=len, reverse=True)
        self.marker = marker
        self.secret_keys = frozenset(key.lower() for key in secret_keys)

    def text(self, value: str) -> str:
        for secret in self.secrets:
            if secret in value:
                value = value.replace(secret, self.marker)
        return value

    def walk(self, value: Any) -> Any:
        """``value`` with every string inside scrubbed; tuples come back as lists."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {self.walk(key): (self.marker if self._is_secret_key(key)
                                     else self.walk(item))
                    for key, item in value.items()}
        if isinstance(value, list | tuple):
            return [self._pair(item) for item in value]
        return value

    def _pair(self, item: Any) -> Any:
        # Request headers may come as [name, value] pairs.
        if (isinstance(item, list | tuple) and len(item) == 2
                and self._is_secret_key(item[0])):
            return [item[0], self.marker]
        return self.walk(item)

    def _is_secret_key(self, key: Any) -> bool:
        return isinstance(key, str) and key.lower() in self.secret_keys


def scrub(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every non-empty secret value replaced by ***."""
    return Scrubber(secrets).text(text)
