"""Decoding the daemon's progress streams (build, push, pull).

The daemon sends JSON objects one after another (CRLF-separated in practice,
but nothing promises a separator, and one object may span network chunks).
An ``error`` or ``errorDetail`` record is a failure, always: :func:`records`
raises :class:`~cdtools.errors.StreamError` on it, so no caller can forget.
"""
from __future__ import annotations

import codecs
import json
from typing import Any, Dict, Iterable, Iterator, Optional

from .errors import StreamError, TransportError

_decoder = json.JSONDecoder()
_WS = " \t\r\n"


def objects(chunks: Iterable[bytes]) -> Iterator[Dict[str, Any]]:
    """Every JSON object in a byte stream, as it completes; no error checks."""
    utf8 = codecs.getincrementaldecoder("utf-8")("replace")
    buf = ""
    for chunk in chunks:
        buf += utf8.decode(chunk)
        pos = 0
        while True:
            while pos < len(buf) and buf[pos] in _WS:
                pos += 1
            if pos >= len(buf):
                break
            try:
                obj, end = _decoder.raw_decode(buf, pos)
            except ValueError:
                break  # incomplete: wait for more bytes
            pos = end
            if not isinstance(obj, dict):
                raise StreamError(f"unexpected record in the daemon's stream: {str(obj)[:80]}")
            yield obj
        buf = buf[pos:]
        if len(buf) > 8 * 1024 * 1024:
            raise StreamError("the daemon's stream holds an unreadable record over 8 MiB")
    buf += utf8.decode(b"", final=True)
    rest = buf.strip(_WS)
    if rest:
        # Not JSON at the end: either cut mid-record or garbage.
        raise TransportError(f"the daemon's stream ended in the middle of a record: {rest[:80]!r}")


def failure(record: Dict[str, Any]) -> Optional[StreamError]:
    """The StreamError a record carries, or None."""
    detail = record.get("errorDetail")
    if detail is None and "error" not in record:
        return None
    message = ""
    code = None
    if isinstance(detail, dict):
        message = str(detail.get("message") or "")
        code = detail.get("code") if isinstance(detail.get("code"), int) else None
    if not message:
        message = str(record.get("error") or "unknown error")
    return StreamError(message.strip(), code)


def records(chunks: Iterable[bytes]) -> Iterator[Dict[str, Any]]:
    """Every record of a progress stream; raises StreamError at the first error record."""
    for record in objects(chunks):
        err = failure(record)
        if err is not None:
            raise err
        yield record
