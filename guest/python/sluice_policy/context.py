"""Host capabilities as a :class:`Context` handed to every hook: log,
clock, metrics, key-value state and DNS. The same code runs against the
gateway (in a component) and against :class:`~sluice_policy.mock.MockHost`
(in pytest)."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import List, Optional


class HostError(Exception):
    """Why a host call failed: see the subclasses :class:`AccessDenied`
    (capability not granted), :class:`InvalidArgument` and
    :class:`Temporary` (retrying later may succeed: usually answer with a
    tempfail verdict)."""

    kind = "host-error"

    def __init__(self, why: str = ""):
        super().__init__(why)
        self.why = why

    @property
    def is_temporary(self) -> bool:
        return isinstance(self, Temporary)

    def __eq__(self, other) -> bool:
        return type(self) is type(other) and self.why == other.why

    def __hash__(self) -> int:
        return hash((type(self), self.why))


class AccessDenied(HostError):
    kind = "access-denied"

    def __str__(self) -> str:
        return "access denied: capability not granted"


class InvalidArgument(HostError):
    kind = "invalid-argument"

    def __str__(self) -> str:
        return f"invalid argument: {self.why}"


class Temporary(HostError):
    kind = "temporary"

    def __str__(self) -> str:
        return f"temporary failure: {self.why}"


class Level(enum.IntEnum):
    """Severity of a log line."""

    TRACE = 0
    DEBUG = 1
    INFO = 2
    WARN = 3
    ERROR = 4


@dataclass(frozen=True)
class Timestamp:
    """Wall-clock time: whole seconds since the Unix epoch and milliseconds."""

    seconds: int
    millis: int = 0

    def unix_millis(self) -> int:
        return self.seconds * 1000 + self.millis


@dataclass(frozen=True)
class Mx:
    """One MX record; the null MX has exchange "."."""

    preference: int
    exchange: str

    @property
    def is_null(self) -> bool:
        return self.exchange == "."


class Context:
    """The capabilities of the gateway, as granted to this policy in its
    config (``capabilities = ["clock", "metrics", "kv", "dns"]``; logging
    is always granted). Every call but the log ones raises
    :class:`HostError` on failure; a DNS name without records gives ``[]``.
    """

    def __init__(self, host):
        self._host = host

    # -- log (always granted) --
    def log(self, level: Level, message: str) -> None:
        self._host.host_log(Level(level), str(message))

    def trace(self, message: str) -> None:
        self.log(Level.TRACE, message)

    def debug(self, message: str) -> None:
        self.log(Level.DEBUG, message)

    def info(self, message: str) -> None:
        self.log(Level.INFO, message)

    def warn(self, message: str) -> None:
        self.log(Level.WARN, message)

    def error(self, message: str) -> None:
        self.log(Level.ERROR, message)

    # -- clock --
    def now(self) -> Timestamp:
        return self._host.host_now()

    # -- metrics --
    def counter_add(self, name: str, delta: int = 1) -> None:
        self._host.host_counter_add(name, delta)

    # -- kv --
    def kv_get(self, key: str) -> Optional[bytes]:
        return self._host.host_kv_get(key)

    def kv_set(self, key: str, value: bytes, ttl_seconds: int = 0) -> None:
        if isinstance(value, str):
            value = value.encode()
        self._host.host_kv_set(key, bytes(value), ttl_seconds)

    def kv_incr(self, key: str, delta: int = 1, ttl_seconds: int = 0) -> int:
        return self._host.host_kv_incr(key, delta, ttl_seconds)

    def kv_delete(self, key: str) -> None:
        self._host.host_kv_delete(key)

    # -- dns --
    def dns_a(self, name: str) -> List[str]:
        return self._host.host_dns("a", name)

    def dns_aaaa(self, name: str) -> List[str]:
        return self._host.host_dns("aaaa", name)

    def dns_mx(self, name: str) -> List[Mx]:
        return self._host.host_dns("mx", name)

    def dns_txt(self, name: str) -> List[str]:
        return self._host.host_dns("txt", name)

    def dns_ptr(self, ip: str) -> List[str]:
        return self._host.host_dns("ptr", ip)
