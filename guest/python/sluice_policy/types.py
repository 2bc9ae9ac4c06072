"""The values of the Sluice policy contract (WIT `sluice:policy/types`), as
plain Python classes that compare by value, so tests can write
``assert verdict == Verdict.reject(550, "5.7.1", "no")``.

They do not depend on the generated bindings: the SDK converts them at the
component boundary (``_component.py``), and natively they are just data.
"""

from __future__ import annotations

import enum
import ipaddress
from dataclasses import dataclass, field, replace
from typing import List, Optional


class Stage(enum.Enum):
    """The stages a policy may handle; the host calls only the hooks of the
    stages a policy lists in ``Policy.stages``."""

    CONNECT = "connect"
    HELO = "helo"
    MAIL_FROM = "mail-from"
    RCPT = "rcpt"
    DATA = "data"
    ROUTE = "route"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class Reply:
    """An SMTP reply for a refusal: 5xx for reject, 4xx for tempfail;
    ``enhanced`` is an RFC 3463 code such as "5.7.1" ("" for the host's
    default)."""

    code: int
    enhanced: str = ""
    text: str = ""

    def __str__(self) -> str:
        return " ".join(p for p in (str(self.code), self.enhanced, self.text) if p)


@dataclass(frozen=True)
class Verdict:
    """What a policy decides at a stage.

    ``Verdict.CONTINUE`` (no opinion), ``Verdict.ACCEPT`` (skip the rest of
    the chain for this stage), ``Verdict.reject(code, enhanced, text)``,
    ``Verdict.tempfail(...)``, ``Verdict.DISCARD`` and
    ``Verdict.quarantine(reason)`` (data stage only).
    """

    kind: str = "continue"
    reply: Optional[Reply] = None
    reason: Optional[str] = None

    KINDS = ("continue", "accept", "reject", "tempfail", "discard", "quarantine")

    @staticmethod
    def reject(code: int, enhanced: str = "", text: str = "") -> "Verdict":
        return Verdict("reject", Reply(code, enhanced, text))

    @staticmethod
    def tempfail(code: int, enhanced: str = "", text: str = "") -> "Verdict":
        return Verdict("tempfail", Reply(code, enhanced, text))

    @staticmethod
    def quarantine(reason: str) -> "Verdict":
        return Verdict("quarantine", reason=reason)

    @property
    def is_continue(self) -> bool:
        return self.kind == "continue"

    def __repr__(self) -> str:
        if self.reply is not None:
            return f"Verdict.{self.kind}({self.reply.code}, {self.reply.enhanced!r}, {self.reply.text!r})"
        if self.reason is not None:
            return f"Verdict.quarantine({self.reason!r})"
        return f"Verdict.{self.kind.upper()}"


Verdict.CONTINUE = Verdict("continue")  # type: ignore[attr-defined]
Verdict.ACCEPT = Verdict("accept")  # type: ignore[attr-defined]
Verdict.DISCARD = Verdict("discard")  # type: ignore[attr-defined]


@dataclass(frozen=True)
class TlsInfo:
    """TLS parameters of the client session."""

    version: str = ""
    cipher: str = ""


@dataclass(frozen=True)
class Session:
    """Who is talking to the gateway; passed to every SMTP-stage hook."""

    client_ip: str = ""
    client_port: int = 0
    listener: str = ""
    helo: Optional[str] = None
    tls: Optional[TlsInfo] = None
    relay_client: bool = False

    def ip(self):
        """The client address as an ``ipaddress`` object, or None."""
        try:
            return ipaddress.ip_address(self.client_ip)
        except ValueError:
            return None

    @property
    def is_tls(self) -> bool:
        return self.tls is not None


@dataclass(frozen=True)
class Param:
    """One ESMTP parameter of MAIL FROM or RCPT TO, e.g. ("SIZE", "1024")."""

    name: str
    value: str = ""

    @staticmethod
    def find(params: List["Param"], name: str) -> Optional[str]:
        """The value of the first parameter called ``name`` (any case)."""
        for p in params:
            if p.name.lower() == name.lower():
                return p.value
        return None


@dataclass(frozen=True)
class Envelope:
    """The envelope as far as it is known at a stage."""

    sender: str = ""
    sender_params: List[Param] = field(default_factory=list)
    recipients: List[str] = field(default_factory=list)

    @property
    def is_null_sender(self) -> bool:
        return self.sender == ""


@dataclass(frozen=True)
class Header:
    """A header field."""

    name: str
    value: str


@dataclass(frozen=True)
class Change:
    """A change a data-stage hook asks for: ``Change.add_header(name,
    value)``, ``Change.remove_header(name)``, ``Change.add_recipient(addr)``,
    ``Change.remove_recipient(addr)``."""

    kind: str
    name: str = ""
    value: str = ""

    @staticmethod
    def add_header(name: str, value: str) -> "Change":
        return Change("add-header", name, value)

    @staticmethod
    def remove_header(name: str) -> "Change":
        return Change("remove-header", name)

    @staticmethod
    def add_recipient(address: str) -> "Change":
        return Change("add-recipient", address)

    @staticmethod
    def remove_recipient(address: str) -> "Change":
        return Change("remove-recipient", address)


@dataclass(frozen=True)
class DataResult:
    """The result of the data stage: a verdict and changes (applied in
    order, only when the chain lets the message through).

    ``DataResult()`` is "continue, no changes"; the builders return a new
    value: ``DataResult().add_header("X-Flag", "bulk").remove_header("X-Old")``.
    """

    verdict: Verdict = Verdict.CONTINUE  # type: ignore[attr-defined]
    changes: tuple = ()

    @staticmethod
    def reject(code: int, enhanced: str = "", text: str = "") -> "DataResult":
        return DataResult(Verdict.reject(code, enhanced, text))

    @staticmethod
    def tempfail(code: int, enhanced: str = "", text: str = "") -> "DataResult":
        return DataResult(Verdict.tempfail(code, enhanced, text))

    @staticmethod
    def quarantine(reason: str) -> "DataResult":
        return DataResult(Verdict.quarantine(reason))

    @staticmethod
    def discard() -> "DataResult":
        return DataResult(Verdict.DISCARD)  # type: ignore[attr-defined]

    @staticmethod
    def accept() -> "DataResult":
        return DataResult(Verdict.ACCEPT)  # type: ignore[attr-defined]

    def with_verdict(self, verdict: Verdict) -> "DataResult":
        return replace(self, verdict=verdict)

    def _plus(self, change: Change) -> "DataResult":
        return replace(self, changes=tuple(self.changes) + (change,))

    def add_header(self, name: str, value: str) -> "DataResult":
        return self._plus(Change.add_header(name, value))

    def remove_header(self, name: str) -> "DataResult":
        return self._plus(Change.remove_header(name))

    def add_recipient(self, address: str) -> "DataResult":
        return self._plus(Change.add_recipient(address))

    def remove_recipient(self, address: str) -> "DataResult":
        return self._plus(Change.remove_recipient(address))


class TlsMode(enum.Enum):
    """TLS policy towards a relay host."""

    OPPORTUNISTIC = "opportunistic"
    REQUIRE = "require"
    NONE = "none"


@dataclass(frozen=True)
class RelayHost:
    host: str
    port: int = 25
    tls: TlsMode = TlsMode.OPPORTUNISTIC


@dataclass(frozen=True)
class Route:
    """Where one recipient goes: ``Route.DEFAULT`` (no opinion),
    ``Route.LOCAL``, ``Route.relay(host, port, tls)``, ``Route.mx(domain)``,
    ``Route.reject(code, enhanced, text)``."""

    kind: str = "default"
    relay_host: Optional[RelayHost] = None
    domain: Optional[str] = None
    reply: Optional[Reply] = None

    @staticmethod
    def relay(host: str, port: int = 25, tls: TlsMode = TlsMode.OPPORTUNISTIC) -> "Route":
        return Route("relay", relay_host=RelayHost(host, port, tls))

    @staticmethod
    def mx(domain: str) -> "Route":
        return Route("mx", domain=domain)

    @staticmethod
    def reject(code: int, enhanced: str = "", text: str = "") -> "Route":
        return Route("reject", reply=Reply(code, enhanced, text))


Route.DEFAULT = Route("default")  # type: ignore[attr-defined]
Route.LOCAL = Route("local")  # type: ignore[attr-defined]


@dataclass(frozen=True)
class PartInfo:
    """A MIME leaf of the message."""

    content_type: str
    filename: Optional[str] = None
    size: int = 0
    is_attachment: bool = False
