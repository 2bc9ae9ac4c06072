"""The message at the data stage. The host owns and parses it once; each
method is a cheap call returning only what was asked for, and the SDK
bounds every answer (at most ``max`` items, ``max_bytes`` octets) whatever
the host returns."""

from __future__ import annotations

from typing import List, Optional

from .types import Header, PartInfo

#: Most octets :meth:`Message.raw` returns per call (the host's limit too).
RAW_MAX = 1 << 20


def truncate_utf8(text: str, max_bytes: int) -> str:
    """Cut ``text`` to at most ``max_bytes`` UTF-8 octets at a character
    boundary."""
    data = text.encode("utf-8")
    if len(data) <= max_bytes:
        return text
    return data[:max_bytes].decode("utf-8", errors="ignore")


class Message:
    """One received message, handed to ``Policy.on_data``."""

    def __init__(self, source):
        self._src = source

    def size(self) -> int:
        """Total size in octets, as received."""
        return self._src.size()

    def header(self, name: str) -> List[str]:
        """Values of every field called ``name`` (any case), in order,
        unfolded and RFC 2047-decoded. Empty when absent."""
        return list(self._src.header(name))

    def first_header(self, name: str) -> Optional[str]:
        values = self.header(name)
        return values[0] if values else None

    def headers(self, max: int = 1000) -> List[Header]:
        """Every field in order, raw values (unfolded, undecoded)."""
        return list(self._src.headers(max))[:max]

    def subject(self) -> Optional[str]:
        return self._src.subject()

    def from_(self) -> List[str]:
        """Addresses of the From field (``from`` is a Python keyword)."""
        return list(self._src.from_())

    def to(self) -> List[str]:
        """Addresses of the To and Cc fields."""
        return list(self._src.to())

    def parts(self, max: int = 100) -> List[PartInfo]:
        """The MIME leaves, at most ``max``."""
        return list(self._src.parts(max))[:max]

    def text(self, max_bytes: int = 65536) -> str:
        """The decoded text bodies joined by line feeds, at most
        ``max_bytes`` octets."""
        return truncate_utf8(self._src.text(max_bytes), max_bytes)

    def raw(self, offset: int = 0, length: int = RAW_MAX) -> bytes:
        """Raw octets from ``offset``, at most ``length`` (and 1 MiB)."""
        length = min(length, RAW_MAX)
        return bytes(self._src.raw(offset, length))[:length]

    def __repr__(self) -> str:
        return f"Message(size={self.size()})"
