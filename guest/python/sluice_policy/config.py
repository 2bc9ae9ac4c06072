"""The policy's settings: the ``[policy.config]`` table of the gateway
config, handed to the policy as JSON and wrapped in a :class:`Config` whose
typed getters name the key in every error (the same texts as the Rust SDK).
"""

from __future__ import annotations

import json
from typing import Any, Iterable, List, Optional


class ConfigError(ValueError):
    """A config value that is missing where required, has the wrong type,
    or is not valid JSON. Raised from a policy's ``__init__`` it refuses the
    policy, with this text, at gateway start."""


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a table"
    return type(value).__name__


class Config:
    """The ``[policy.config]`` table.

    Getters return ``None`` when a key is absent (or JSON null) and raise
    :class:`ConfigError` naming the key when it has the wrong type::

        zones = config.list_str("zones") or []
        limit = config.u32("limit") or 100
        config.check_keys(["zones", "limit"])   # catch misspelt keys
    """

    def __init__(self, table: Optional[dict] = None, path: str = ""):
        if table is None:
            table = {}
        if not isinstance(table, dict):
            raise ConfigError(f"config must be a table, found {_kind(table)}")
        self._map = table
        self._path = path

    @staticmethod
    def from_json(text: str) -> "Config":
        """Parse JSON text, which must be an object; empty text is ``{}``."""
        if not text.strip():
            return Config()
        try:
            value = json.loads(text)
        except ValueError as e:
            raise ConfigError(f"config is not valid JSON: {e}") from None
        return Config(value)

    def as_dict(self) -> dict:
        return self._map

    def get(self, key: str) -> Any:
        """The raw value of ``key`` (None when absent)."""
        return self._map.get(key)

    def contains(self, key: str) -> bool:
        return self._map.get(key) is not None

    def keys(self) -> List[str]:
        return list(self._map.keys())

    def is_empty(self) -> bool:
        return not self._map

    def key_path(self, key: str) -> str:
        return f"{self._path}.{key}" if self._path else key

    def _wrong(self, key: str, expected: str, found: Any) -> ConfigError:
        return ConfigError(
            f"config key `{self.key_path(key)}`: expected {expected}, found {_kind(found)}"
        )

    def str(self, key: str) -> Optional[str]:
        v = self._map.get(key)
        if v is None or isinstance(v, str):
            return v
        raise self._wrong(key, "a string", v)

    def list_str(self, key: str) -> Optional[List[str]]:
        v = self._map.get(key)
        if v is None:
            return None
        if not isinstance(v, list):
            raise self._wrong(key, "a list of strings", v)
        for item in v:
            if not isinstance(item, str):
                raise self._wrong(key, "a list of strings", item)
        return list(v)

    def u32(self, key: str) -> Optional[int]:
        v = self._map.get(key)
        if v is None:
            return None
        if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= 0xFFFFFFFF:
            raise self._wrong(key, "an integer from 0 to 4294967295", v)
        return v

    def int(self, key: str) -> Optional[int]:
        v = self._map.get(key)
        if v is None:
            return None
        if isinstance(v, bool) or not isinstance(v, int):
            raise self._wrong(key, "an integer", v)
        return v

    def float(self, key: str) -> Optional[float]:
        v = self._map.get(key)
        if v is None:
            return None
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise self._wrong(key, "a number", v)
        return float(v)

    def bool(self, key: str) -> Optional[bool]:
        v = self._map.get(key)
        if v is None or isinstance(v, bool):
            return v
        raise self._wrong(key, "true or false", v)

    def table(self, key: str) -> Optional["Config"]:
        """A nested table whose errors name the full dotted key."""
        v = self._map.get(key)
        if v is None:
            return None
        if not isinstance(v, dict):
            raise self._wrong(key, "a table", v)
        return Config(v, self.key_path(key))

    def check_keys(self, allowed: Iterable[str]) -> None:
        """Raise naming the first key not in ``allowed``."""
        allowed = list(allowed)
        for k in self._map:
            if k not in allowed:
                raise ConfigError(
                    f"config key `{self.key_path(k)}` is not known (known: {', '.join(allowed)})"
                )

    def __repr__(self) -> str:
        return f"Config({self._map!r})"
