"""The common record types' data, from zone-file tokens straight to wire format.

A, AAAA, NS, CNAME, PTR, DNAME, MX, TXT, SPF, SOA, SRV and CAA, written the
plain way (numbers as digits, printable ASCII, the usual escapes), are
encoded here without building an object. Each encoder returns None for
anything else (another spelling, a value out of range, a bad name): the
reader then hands the text to dnspython, which reads it or words the error,
so a record means the same whichever path read it.
"""

from __future__ import annotations

import re
import socket
import struct

import dns.rdatatype

_LENGTH = {n: bytes((n,)) for n in range(1, 64)}
_ESCAPE = re.compile(rb"\\(\d{3}|[^\d])", re.DOTALL)
_PLAIN_ESCAPES = re.compile(rb'(?:[^\\"]|\\(?:\d{3}|[^\d]))*\Z', re.DOTALL)


def name(text: str, origin: bytes) -> bytes | None:
    """A domain name as written → wire (case kept); None unless plain ASCII and valid."""
    if text == "@":
        return origin
    if not text.isascii() or "\\" in text or '"' in text:
        return None
    if text[-1] == ".":
        if text == ".":
            return b"\x00"
        text, origin = text[:-1], b"\x00"
    try:
        wire = b"".join([_LENGTH[len(label)] + label for label in text.encode().split(b".")])
    except KeyError:  # an empty label, or one longer than 63
        return None
    wire += origin
    return wire if len(wire) <= 255 else None


def _uint(text: str, top: int) -> int | None:
    if not (text.isascii() and text.isdigit()) or len(text) > 10:
        return None
    value = int(text)
    return value if value <= top else None


def _unescape(match) -> bytes:
    code = match.group(1)
    if len(code) == 3 and code.isdigit():
        value = int(code)
        if value > 255:
            raise ValueError
        return bytes((value,))
    return code


def string(token: str) -> bytes | None:
    """A character string (quoted or not, escapes read) → its bytes, without length."""
    if not token.isascii():
        return None
    if token[0] == '"':
        if len(token) < 2 or token[-1] != '"':
            return None
        token = token[1:-1]
    data = token.encode()
    if b"\\" in data or b'"' in data:
        if not _PLAIN_ESCAPES.match(data):
            return None
        try:
            data = _ESCAPE.sub(_unescape, data)
        except ValueError:
            return None
    return data


def _address(family):
    def encode(tokens: list, origin: bytes) -> bytes | None:
        if len(tokens) != 1:
            return None
        try:
            return socket.inet_pton(family, tokens[0])
        except (OSError, ValueError):
            return None
    return encode


def _target(tokens: list, origin: bytes) -> bytes | None:
    return name(tokens[0], origin) if len(tokens) == 1 else None


def _mx(tokens: list, origin: bytes) -> bytes | None:
    if len(tokens) != 2:
        return None
    preference, target = _uint(tokens[0], 0xFFFF), name(tokens[1], origin)
    if preference is None or target is None:
        return None
    return preference.to_bytes(2, "big") + target


def _txt(tokens: list, origin: bytes) -> bytes | None:
    out = bytearray()
    for token in tokens:
        data = string(token)
        if data is None or len(data) > 255:
            return None
        out.append(len(data))
        out += data
    return bytes(out) if tokens else None


def _soa(tokens: list, origin: bytes) -> bytes | None:
    if len(tokens) != 7:
        return None
    mname, rname = name(tokens[0], origin), name(tokens[1], origin)
    numbers = [_uint(t, 0xFFFFFFFF) for t in tokens[2:]]
    if mname is None or rname is None or None in numbers:
        return None
    return mname + rname + struct.pack("!IIIII", *numbers)


def _srv(tokens: list, origin: bytes) -> bytes | None:
    if len(tokens) != 4:
        return None
    numbers = [_uint(t, 0xFFFF) for t in tokens[:3]]
    target = name(tokens[3], origin)
    if target is None or None in numbers:
        return None
    return struct.pack("!HHH", *numbers) + target


def _caa(tokens: list, origin: bytes) -> bytes | None:
    if len(tokens) != 3:
        return None
    flags, tag = _uint(tokens[0], 0xFF), tokens[1]
    value = string(tokens[2])
    if flags is None or value is None or not (tag.isascii() and tag.isalnum()) \
            or len(tag) > 255:
        return None
    return bytes((flags, len(tag))) + tag.encode() + value


T = dns.rdatatype
ENCODERS = {T.A: _address(socket.AF_INET), T.AAAA: _address(socket.AF_INET6),
            T.NS: _target, T.CNAME: _target, T.PTR: _target, T.DNAME: _target,
            T.MX: _mx, T.TXT: _txt, T.SPF: _txt, T.SOA: _soa, T.SRV: _srv, T.CAA: _caa}
