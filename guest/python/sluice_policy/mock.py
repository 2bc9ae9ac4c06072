"""Native test doubles: :class:`MockHost` stands in for the gateway's
capabilities and :class:`MockMessage` for the host-owned message, so a
policy's hooks run under plain ``python -m pytest``, no WebAssembly
involved. They follow the host's documented rules (key and value sizes,
counter names, DNS name checks, the kv counter format); the message is
parsed with Python's ``email`` package, which agrees with the gateway's
parser on ordinary messages (header values unfolded and trimmed, RFC 2047
decoded, MIME leaves) but is not the same code: run the end-to-end test
for exotic ones."""

from __future__ import annotations

import email
import email.header
import email.policy
import email.utils
import ipaddress
import re
from typing import Dict, Iterable, List, Optional, Tuple

from .context import AccessDenied, Context, HostError, InvalidArgument, Level, Mx, Timestamp
from .message import Message, truncate_utf8
from .types import Header, PartInfo

#: The time a new MockHost starts at: 2023-11-14T22:13:20Z.
MOCK_START = Timestamp(1_700_000_000, 0)

CAPABILITIES = ("clock", "metrics", "kv", "dns")
KEY_MAX = 512
VALUE_MAX = 64 * 1024
_METRIC = re.compile(r"[a-z0-9_]{1,64}")
I32_MIN, I32_MAX = -(2**31), 2**31 - 1


def _normalize_name(name: str) -> str:
    if name.endswith("."):
        name = name[:-1]
    return name.lower()


def _check_name(name: str) -> str:
    n = _normalize_name(name)
    ok = (
        0 < len(n) <= 253
        and all(0 < len(label) <= 63 for label in n.split("."))
        and all(33 <= ord(c) <= 126 and c != "\\" for c in n)
    )
    if not ok:
        raise InvalidArgument(f"malformed domain name {name!r}")
    return n


def _check_key(key: str) -> None:
    size = len(key.encode())
    if size == 0 or size > KEY_MAX:
        raise InvalidArgument(f"a key is 1 to {KEY_MAX} octets, this one is {size}")


class MockHost:
    """A fake gateway: in-memory kv with expiry on a settable clock, canned
    DNS answers, captured log lines and counters, per-capability grants.

    A new host grants nothing but logging (like a policy with no
    ``capabilities``); builder methods return the host so they chain::

        host = MockHost().grant("kv").dns_a("2.0.0.127.zen.example", ["127.0.0.2"])
        ctx = host.context()
        assert ctx.kv_incr("k", 1, 300) == 1
        host.advance(300)
        assert ctx.kv_get("k") is None          # expired
    """

    def __init__(self):
        self.granted = set()
        self.now_ms = MOCK_START.unix_millis()
        self._kv: Dict[str, Tuple[bytes, Optional[int]]] = {}
        self._dns: Dict[Tuple[str, str], list] = {}
        self._dns_errors: Dict[str, HostError] = {}
        self._logs: List[Tuple[Level, str]] = []
        self._counters: Dict[str, int] = {}
        self._calls: List[str] = []

    # ---- builders ----
    def grant(self, *capabilities: str) -> "MockHost":
        for cap in capabilities:
            if cap not in CAPABILITIES:
                raise ValueError(f"unknown capability {cap!r} (one of {', '.join(CAPABILITIES)})")
            self.granted.add(cap)
        return self

    def grant_all(self) -> "MockHost":
        return self.grant(*CAPABILITIES)

    def revoke(self, cap: str) -> "MockHost":
        self.granted.discard(cap)
        return self

    def at(self, time: Timestamp) -> "MockHost":
        self.now_ms = time.unix_millis()
        return self

    def kv(self, key: str, value, ttl_seconds: int = 0) -> "MockHost":
        if isinstance(value, str):
            value = value.encode()
        self._kv[key] = (bytes(value), self._expiry(ttl_seconds))
        return self

    def _answers(self, kind: str, name: str, values) -> "MockHost":
        key = name if kind == "ptr" else _normalize_name(name)
        if kind == "ptr":
            key = str(ipaddress.ip_address(name))
        self._dns[(kind, key)] = list(values)
        return self

    def dns_a(self, name: str, addresses: Iterable[str]) -> "MockHost":
        return self._answers("a", name, addresses)

    def dns_aaaa(self, name: str, addresses: Iterable[str]) -> "MockHost":
        return self._answers("aaaa", name, addresses)

    def dns_mx(self, name: str, records: Iterable[Tuple[int, str]]) -> "MockHost":
        return self._answers("mx", name, [Mx(p, e) for p, e in records])

    def dns_txt(self, name: str, texts: Iterable[str]) -> "MockHost":
        return self._answers("txt", name, texts)

    def dns_ptr(self, ip: str, names: Iterable[str]) -> "MockHost":
        return self._answers("ptr", ip, names)

    def dns_error(self, name: str, error: HostError) -> "MockHost":
        self._dns_errors[_normalize_name(name)] = error
        return self

    # ---- time ----
    def set_time(self, time: Timestamp) -> None:
        self.now_ms = time.unix_millis()

    def advance(self, seconds: float) -> None:
        self.now_ms += int(seconds * 1000)

    def time(self) -> Timestamp:
        return Timestamp(self.now_ms // 1000, self.now_ms % 1000)

    # ---- inspection ----
    def context(self) -> Context:
        return Context(self)

    def logs(self) -> List[Tuple[Level, str]]:
        return list(self._logs)

    def logged(self, needle: str) -> bool:
        return any(needle in line for _, line in self._logs)

    def counter(self, name: str) -> int:
        return self._counters.get(name, 0)

    def counters(self) -> Dict[str, int]:
        return dict(self._counters)

    def kv_value(self, key: str) -> Optional[bytes]:
        entry = self._live(key)
        return entry[0] if entry else None

    def calls(self) -> List[str]:
        return list(self._calls)

    # ---- the host side of Context ----
    def _expiry(self, ttl_seconds: int) -> Optional[int]:
        return self.now_ms + ttl_seconds * 1000 if ttl_seconds > 0 else None

    def _live(self, key: str):
        entry = self._kv.get(key)
        if entry is None or (entry[1] is not None and self.now_ms >= entry[1]):
            return None
        return entry

    def _call(self, cap: str, what: str) -> None:
        self._calls.append(what)
        if cap not in self.granted:
            raise AccessDenied()

    def host_log(self, level: Level, message: str) -> None:
        self._logs.append((level, message))

    def host_now(self) -> Timestamp:
        self._call("clock", "clock.now")
        return self.time()

    def host_counter_add(self, name: str, delta: int) -> None:
        self._call("metrics", f"metrics.counter_add {name} {delta}")
        if not _METRIC.fullmatch(name):
            raise InvalidArgument(f"a counter name is 1 to 64 of [a-z0-9_], not {name!r}")
        self._counters[name] = self._counters.get(name, 0) + delta

    def host_kv_get(self, key: str) -> Optional[bytes]:
        self._call("kv", f"kv.get {key}")
        _check_key(key)
        return self.kv_value(key)

    def host_kv_set(self, key: str, value: bytes, ttl_seconds: int) -> None:
        self._call("kv", f"kv.set {key} {ttl_seconds}")
        _check_key(key)
        if len(value) > VALUE_MAX:
            raise InvalidArgument(f"a value is at most {VALUE_MAX} octets, this one is {len(value)}")
        self._kv[key] = (bytes(value), self._expiry(ttl_seconds))

    def host_kv_incr(self, key: str, delta: int, ttl_seconds: int) -> int:
        self._call("kv", f"kv.incr {key} {delta} {ttl_seconds}")
        _check_key(key)
        entry = self._live(key)
        if entry is None:
            current, expires = 0, self._expiry(ttl_seconds)
        else:
            try:
                current = int(entry[0].decode().strip())
            except ValueError:
                raise InvalidArgument(f"the value of {key!r} is not a counter") from None
            expires = entry[1]
        new = max(I32_MIN, min(I32_MAX, current + delta))
        self._kv[key] = (str(new).encode(), expires)
        return new

    def host_kv_delete(self, key: str) -> None:
        self._call("kv", f"kv.delete {key}")
        _check_key(key)
        self._kv.pop(key, None)

    def host_dns(self, kind: str, name: str) -> list:
        self._call("dns", f"dns.{kind} {name}")
        if kind == "ptr":
            try:
                key = str(ipaddress.ip_address(name))
            except ValueError:
                raise InvalidArgument(f"malformed IP address {name!r}") from None
        else:
            key = _check_name(name)
        if key in self._dns_errors:
            raise self._dns_errors[key]
        return list(self._dns.get((kind, key), []))


def _unfold(value: str) -> str:
    return value.replace("\r\n", "").replace("\n", "").replace("\r", "").strip()


def _decode(value: str) -> str:
    try:
        return _unfold(str(email.header.make_header(email.header.decode_header(value))))
    except Exception:  # a malformed encoded-word: the raw text
        return value


class MockMessage:
    """A message for native tests, standing in for the host's message
    resource: ``policy.on_data(ctx, session, envelope, MockMessage.parse(raw).message())``.
    LF line ends are taken as CRLF."""

    def __init__(self, raw: bytes):
        if isinstance(raw, str):
            raw = raw.encode("utf-8")
        if b"\r\n" not in raw:
            raw = raw.replace(b"\n", b"\r\n")
        self.raw_bytes = raw
        head = raw.split(b"\r\n\r\n", 1)[0].decode("utf-8", errors="replace")
        self._fields: List[Tuple[str, str, str]] = []
        for line in head.split("\r\n"):
            if line[:1] in (" ", "\t") and self._fields:
                name, value, _ = self._fields[-1]
                self._fields[-1] = (name, value + line, "")
            elif ":" in line:
                name, value = line.split(":", 1)
                self._fields.append((name.strip(), value, ""))
        self._fields = [(n, _unfold(v), _decode(_unfold(v))) for n, v, _ in self._fields]
        msg = email.message_from_bytes(raw, policy=email.policy.default)
        self._subject = next((d for n, _, d in self._fields if n.lower() == "subject"), None)
        self._from = [a for _, a in email.utils.getaddresses(self._values("from")) if a]
        self._to = [a for _, a in email.utils.getaddresses(self._values("to") + self._values("cc")) if a]
        self._parts: List[PartInfo] = []
        texts: List[str] = []
        for part in msg.walk():
            if part.is_multipart():
                continue
            payload = part.get_payload(decode=True) or b""
            attachment = part.get_content_disposition() == "attachment" or (
                part.get_filename() is not None and part.get_content_maintype() != "text"
            )
            self._parts.append(
                PartInfo(part.get_content_type().lower(), part.get_filename(), len(payload), attachment)
            )
            if part.get_content_type() == "text/plain" and not attachment:
                texts.append(payload.decode(part.get_content_charset() or "utf-8", errors="replace"))
        self._text = "\n".join(texts)

    @staticmethod
    def parse(raw) -> "MockMessage":
        return MockMessage(raw)

    @staticmethod
    def from_file(path) -> "MockMessage":
        with open(path, "rb") as f:
            return MockMessage(f.read())

    def message(self) -> Message:
        return Message(self)

    def _values(self, name: str) -> List[str]:
        return [d for n, _, d in self._fields if n.lower() == name.lower()]

    # ---- the host side of Message ----
    def size(self) -> int:
        return len(self.raw_bytes)

    def header(self, name: str) -> List[str]:
        return self._values(name)

    def headers(self, max: int) -> List[Header]:
        return [Header(n, r) for n, r, _ in self._fields[:max]]

    def subject(self) -> Optional[str]:
        return self._subject

    def from_(self) -> List[str]:
        return list(self._from)

    def to(self) -> List[str]:
        return list(self._to)

    def parts(self, max: int) -> List[PartInfo]:
        return self._parts[:max]

    def text(self, max_bytes: int) -> str:
        return truncate_utf8(self._text, max_bytes)

    def raw(self, offset: int, length: int) -> bytes:
        return self.raw_bytes[offset : offset + length]
