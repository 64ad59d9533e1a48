"""Application checks: HTTP(S) GET, SMTP/POP3/IMAP/FTP greetings, DNS SOA.

Each speaks just enough of its protocol to prove the server answers as a
client would see it, then says goodbye politely (QUIT/LOGOUT). Options come
from the policy's ``[policy.check]`` table (or ``--check-option KEY=VALUE``).
"""

from __future__ import annotations

import ipaddress
import re
import time

import dns.asyncquery
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype

from clusterkit.definition.values import endpoint
from clusterkit.registry import CheckFailed, CheckTarget
from clusterkit_checks.session import Session, option_bool, tls_context

MAX_BODY = 65536


# --------------------------------------------------------------------- HTTP


def parse_status(spec) -> list[tuple[int, int]]:
    """``200``, ``"200,204"``, ``"200-399"`` or ``"2xx"`` → inclusive ranges."""
    ranges = []
    for part in str(spec).replace(" ", "").split(","):
        if re.fullmatch(r"[1-5]xx", part):
            low = int(part[0]) * 100
            ranges.append((low, low + 99))
        elif re.fullmatch(r"\d{3}-\d{3}", part):
            low, high = map(int, part.split("-"))
            ranges.append((low, high))
        elif re.fullmatch(r"\d{3}", part):
            ranges.append((int(part), int(part)))
        else:
            raise CheckFailed(f"check option status={spec!r}: expected e.g. 200, 200,301, 200-399 or 2xx")
    return ranges


def _http(tls: bool):
    async def probe(s: Session) -> str:
        options = s.target.options
        path = str(options.get("path", "/"))
        if not path.startswith("/") or any(c in path for c in " \r\n"):
            raise CheckFailed(f"check option path={path!r} must start with / and contain no spaces")
        wanted = parse_status(options.get("status", "200-399"))
        expect = str(options.get("expect", ""))
        host = str(options.get("host") or _host_header(s.target, tls))
        sni = options.get("sni") or _name_only(host)
        await s.open(tls_context(options) if tls else None, server_hostname=sni if tls else None)
        s.send(f"GET {path} HTTP/1.0\r\nHost: {host}\r\nUser-Agent: clusterkit-check\r\n"
               f"Accept: */*\r\nConnection: close\r\n\r\n".encode())
        status = await s.line("the status line")
        match = re.fullmatch(r"HTTP/\d\.\d (\d{3})(?: (.*))?", status)
        if not match:
            raise CheckFailed(f"not an HTTP response: {status[:120]!r}")
        code, reason = int(match.group(1)), (match.group(2) or "").strip()
        if not any(low <= code <= high for low, high in wanted):
            expected = options.get("status", "200-399")
            raise CheckFailed(f"GET {path}: HTTP {code} {reason} (expected {expected})")
        if expect:
            length = MAX_BODY
            while header := await s.line("the response headers"):
                name, _, value = header.partition(":")
                if name.strip().lower() == "content-length" and value.strip().isdigit():
                    length = min(length, int(value))
            s.stage = "the response body"
            body = b""  # up to Content-Length (a server may keep the connection open) or EOF
            while len(body) < length and (chunk := await s.reader.read(length - len(body))):
                body += chunk
            if expect.encode() not in body:
                raise CheckFailed(f"GET {path}: HTTP {code}, body does not contain {expect!r}")
        return f"HTTP {code} {reason}".rstrip()

    return probe


def _host_header(target: CheckTarget, tls: bool) -> str:
    address = f"[{target.address}]" if ":" in target.address else target.address
    return address if target.port == (443 if tls else 80) else f"{address}:{target.port}"


def _name_only(host: str) -> str | None:
    """The SNI name for a Host header value: none for an IP literal."""
    name = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    name = name.strip("[]")
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return name or None
    return None


http_probe = _http(tls=False)
https_probe = _http(tls=True)


# -------------------------------------------------------- mail, FTP greetings


#: services whose port speaks TLS from the first byte: their checks default to ``tls = true``
IMPLICIT_TLS = frozenset({"smtps", "pop3s", "imaps", "ftps"})


async def _open_maybe_tls(s: Session) -> None:
    """TLS first for the implicit-TLS services (smtps 465, pop3s 995, imaps 993) or ``tls = true``."""
    tls = option_bool(s.target.options, "tls", s.target.service in IMPLICIT_TLS)
    await s.open(tls_context(s.target.options) if tls else None,
                 server_hostname=s.target.options.get("sni") if tls else None)


async def smtp_probe(s: Session) -> str:
    await _open_maybe_tls(s)
    code, text = await s.reply("the SMTP greeting")
    if code != 220:
        raise CheckFailed(f"SMTP greeting {code} {text}")
    helo = str(s.target.options.get("helo", "clusterkit-check"))
    s.send(f"EHLO {helo}\r\n".encode())
    ehlo, ehlo_text = await s.reply("the EHLO reply")
    if ehlo != 250:
        raise CheckFailed(f"EHLO answered {ehlo} {ehlo_text}")
    s.send(b"QUIT\r\n")
    return f"220 {text[:60]}; EHLO 250"


async def pop3_probe(s: Session) -> str:
    await _open_maybe_tls(s)
    greeting = await s.line("the POP3 greeting")
    if not greeting.startswith("+OK"):
        raise CheckFailed(f"POP3 greeting {greeting[:120]!r}")
    s.send(b"QUIT\r\n")
    return greeting[:80]


async def imap_probe(s: Session) -> str:
    await _open_maybe_tls(s)
    greeting = await s.line("the IMAP greeting")
    if not greeting.upper().startswith("* OK"):
        raise CheckFailed(f"IMAP greeting {greeting[:120]!r}")
    s.send(b"ck1 LOGOUT\r\n")
    return greeting[:80]


async def ftp_probe(s: Session) -> str:
    await _open_maybe_tls(s)
    code, text = await s.reply("the FTP greeting")
    if code != 220:
        raise CheckFailed(f"FTP greeting {code} {text}")
    s.send(b"QUIT\r\n")
    return f"220 {text[:60]}"


# ----------------------------------------------------------------------- DNS


async def dns_check(target: CheckTarget) -> str:
    """The SOA of ``zone`` over UDP: NOERROR, the AA bit, the zone's SOA in the answer.

    UDP carries no PROXY header: ``proxy_protocol`` does not apply here.
    """
    zone = target.options.get("zone")
    if not zone:
        raise CheckFailed("check option 'zone' is not set (the zone whose SOA is asked)")
    try:
        name = dns.name.from_text(str(zone))
    except dns.exception.DNSException as exc:
        raise CheckFailed(f"check option zone={zone!r}: {exc}") from None
    query = dns.message.make_query(name, dns.rdatatype.SOA)
    query.flags &= ~dns.flags.RD
    where = endpoint(target.address, target.port)
    started = time.monotonic()
    try:
        answer = await dns.asyncquery.udp(query, target.address, timeout=target.timeout,
                                          port=target.port, ignore_unexpected=True)
    except dns.exception.Timeout:
        raise CheckFailed(f"dns {where}: no answer for {name} SOA within {target.timeout}s") from None
    except (OSError, dns.exception.DNSException) as exc:
        raise CheckFailed(f"dns {where}: {name} SOA: {exc}") from None
    rcode = answer.rcode()
    if rcode != dns.rcode.NOERROR:
        raise CheckFailed(f"dns {where}: {name} SOA answered {dns.rcode.to_text(rcode)}")
    if not answer.flags & dns.flags.AA:
        raise CheckFailed(f"dns {where}: {name} SOA answer is not authoritative (AA not set)")
    soa = next((rrset for rrset in answer.answer
                if rrset.rdtype == dns.rdatatype.SOA and rrset.name == name), None)
    if soa is None:
        raise CheckFailed(f"dns {where}: no SOA for {name} in the answer section")
    return f"{name} SOA serial {soa[0].serial}, AA, in {(time.monotonic() - started) * 1000:.1f} ms"
