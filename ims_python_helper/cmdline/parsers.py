"""Parsers for option values: each reads the text of a flag, variable or file, or raises ValueError saying why."""

from __future__ import annotations

import math
import re
from typing import Any, Callable, Sequence, Tuple

from ..clients.transport import OFF_WORDS, ON_WORDS

#: Most parallel S3 requests allowed (memory is bounded by part size times this).
MAX_CONCURRENCY = 64
#: A DNS name or IPv4 address (letters, digits, dots, hyphens), or an IPv6 address in brackets.
_HOST = re.compile(
    r"^(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*|\[[0-9a-f:.]+\])$"
)


def _number(kind: Callable[[str], Any], text: str, expected: str) -> Any:
    try:
        return kind(text)
    except ValueError:
        raise ValueError(f"expected {expected}, got {text!r}") from None


def positive_float(text: str) -> float:
    """A positive, finite number of seconds."""
    value = float(_number(float, text, "a number of seconds"))
    if not value > 0:
        raise ValueError(f"expected a positive number, got {text!r}")
    if not math.isfinite(value):
        raise ValueError(f"expected a finite number of seconds, got {text!r}")
    return value


def positive_int(text: str) -> int:
    """A whole number of at least 1."""
    value = int(_number(int, text, "a whole number"))
    if value < 1:
        raise ValueError(f"expected a whole number of at least 1, got {text!r}")
    return value


def part_size_mib(text: str) -> int:
    """A multipart part size in MiB, within what S3 allows."""
    value = positive_int(text)
    if not 5 <= value <= 5120:
        raise ValueError(f"S3 parts must be 5 to 5120 MiB, got {value}")
    return value


def concurrency(text: str) -> int:
    """A number of parallel S3 requests, at most ``MAX_CONCURRENCY``."""
    value = positive_int(text)
    if value > MAX_CONCURRENCY:
        raise ValueError(f"expected at most {MAX_CONCURRENCY} parallel requests, got {value}")
    return value


def boolean(text: str) -> bool:
    """An on or off word (``true``, ``off``, ``1`` ...)."""
    lowered = text.strip().lower()
    if lowered in ON_WORDS:
        return True
    if lowered in OFF_WORDS:
        return False
    raise ValueError(f"expected true or false, got {text!r}")


def choice(choices: Sequence[str], upper: bool = False) -> Callable[[str], str]:
    """A parser that accepts one of ``choices`` (upper-cased first when ``upper``)."""

    def parse(text: str) -> str:
        value = text.strip().upper() if upper else text.strip()
        if value not in choices:
            raise ValueError(f"expected one of {', '.join(choices)}, got {text!r}")
        return value

    return parse


def md5_hex(text: str) -> str:
    """An md5 as 32 hexadecimal digits (any case; kept lower-case)."""
    value = text.strip().lower()
    if len(value) != 32 or any(c not in "0123456789abcdef" for c in value):
        raise ValueError(f"expected an md5 of 32 hexadecimal digits, got {text[:80]!r}")
    return value


def host_list(text: str) -> Tuple[str, ...]:
    """Comma-separated host names (``packages.local,nexus.example``), lower-cased; empty text is none."""
    hosts = []
    for entry in (part.strip() for part in text.split(",")):
        name = entry.lower()
        if not name:
            continue
        if not _HOST.match(name):
            raise ValueError(
                f"expected host names separated by commas (no scheme, port or path), got {entry.strip()!r}"
            )
        hosts.append(name.strip("[]"))  # as urlsplit gives an IPv6 host: without brackets
    return tuple(hosts)


def text(value: str) -> str:
    """Any text, without surrounding blanks."""
    return value.strip()
