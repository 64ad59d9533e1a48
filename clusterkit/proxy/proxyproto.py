"""PROXY protocol headers (HAProxy's proxy-protocol.txt, versions 1 and 2).

Sent to the member as the first bytes of the connection so that nginx,
Apache, Postfix or Dovecot on the node see the client's address and the
public address it connected to, not the manager's.
"""

from __future__ import annotations

import ipaddress
import struct

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V2_PROXY = 0x21          # version 2, command PROXY
V2_TCP4, V2_TCP6 = 0x11, 0x21


def header(version: str, client: tuple, local: tuple) -> bytes:
    """The header for a connection from ``client`` to ``local`` (both (ip, port, ...))."""
    if version == "v1":
        return v1(client, local)
    if version == "v2":
        return v2(client, local)
    return b""


def v1(client: tuple, local: tuple) -> bytes:
    """``PROXY TCP4 src dst sport dport\\r\\n`` (``UNKNOWN`` when families differ)."""
    src, dst = _ip(client[0]), _ip(local[0])
    if src.version != dst.version:
        return b"PROXY UNKNOWN\r\n"
    family = "TCP4" if src.version == 4 else "TCP6"
    return f"PROXY {family} {src} {dst} {client[1]} {local[1]}\r\n".encode("ascii")


def v2(client: tuple, local: tuple) -> bytes:
    """The binary header: signature, PROXY command, TCP over IPv4/IPv6, addresses, ports."""
    src, dst = _ip(client[0]), _ip(local[0])
    if src.version != dst.version:  # LOCAL-like: no address block
        return V2_SIGNATURE + bytes((0x21, 0x00)) + struct.pack("!H", 0)
    family = V2_TCP4 if src.version == 4 else V2_TCP6
    body = src.packed + dst.packed + struct.pack("!HH", client[1], local[1])
    return V2_SIGNATURE + bytes((V2_PROXY, family)) + struct.pack("!H", len(body)) + body


def _ip(text: str):
    address = ipaddress.ip_address(text.split("%", 1)[0])
    if address.version == 6 and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address
