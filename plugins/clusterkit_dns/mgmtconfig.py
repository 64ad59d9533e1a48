"""The management keys of ``[dns]``: TSIG keys, outside secondaries, health-aware names.

```toml
[dns.tsig."xfr.example.com"]          # a TSIG key (RFC 8945), named by a domain name
algorithm = "hmac-sha256"             # hmac-sha256 (default), hmac-sha384, hmac-sha512
secret = "base64..."                  # or secret_file = "/etc/clusterkit/xfr.key"

[[dns.secondary]]                     # one outside secondary (BIND, NSD, Knot, PowerDNS)
name = "ns-outside"
addresses = ["192.0.2.53", "2001:db8:53::/64"]   # who may pull (IPs or networks)
key = "xfr.example.com"               # transfers must be signed with it; "" = address only
zones = ["example.com"]               # default: every zone served
notify = ["192.0.2.53"]               # IP or IP:PORT; default: the single IPs of addresses, port 53

ixfr_history = 10                     # differences kept per zone for IXFR (0: AXFR only)

[[dns.health_name]]                   # a name answering with the healthy members of a policy
zone = "example.com"
name = "www"                          # relative to the zone, or absolute
policy = "203.0.113.10:80"            # VIP:PORT of a [[policy]]
ttl = 30
addresses = { node1 = "198.51.100.11" }   # published address per node (default: its ip)
```

Parsed by :func:`parse_management`, called from ``[dns]``'s parser;
every problem is reported with its key path.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
from dataclasses import dataclass

import dns.name
import dns.exception
import dns.tsig

from clusterkit.definition.values import read_number

KEYS = ("tsig", "secondary", "health_name", "ixfr_history")
IXFR_HISTORY = 10        # versions of each zone an IXFR can start from
IXFR_HISTORY_MAX = 1000
ALGORITHMS = {"hmac-sha256": dns.tsig.HMAC_SHA256, "hmac-sha384": dns.tsig.HMAC_SHA384,
              "hmac-sha512": dns.tsig.HMAC_SHA512}


@dataclass(frozen=True)
class TsigKey:
    name: str          # the key's domain name, as written
    algorithm: str     # one of ALGORITHMS
    secret: bytes

    def key(self) -> dns.tsig.Key:
        return dns.tsig.Key(dns.name.from_text(self.name), self.secret, ALGORITHMS[self.algorithm])


@dataclass(frozen=True)
class Secondary:
    name: str
    networks: tuple  # ipaddress networks allowed to transfer
    key: str         # TSIG key name, "" for address-only
    zones: tuple     # zone names (absolute, lower case); empty = every zone
    notify: tuple    # (ip, port) pairs

    def serves(self, zone: dns.name.Name) -> bool:
        return not self.zones or zone.to_text().lower() in self.zones

    def allows(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address.split("%")[0])
        except ValueError:
            return False
        if ip.version == 6 and ip.ipv4_mapped:
            ip = ip.ipv4_mapped
        return any(ip in net for net in self.networks)


@dataclass(frozen=True)
class HealthName:
    zone: str        # absolute, lower case
    name: str        # absolute, lower case
    policy: str      # VIP:PORT
    ttl: int
    addresses: tuple  # (node, address) pairs overriding the node's ip


@dataclass(frozen=True)
class Management:
    keys: tuple = ()          # TsigKey
    secondaries: tuple = ()   # Secondary
    health_names: tuple = ()  # HealthName
    ixfr_history: int = IXFR_HISTORY

    def key(self, name: str) -> TsigKey | None:
        wanted = _key_name(name)
        return next((k for k in self.keys if _key_name(k.name) == wanted), None)

    def secondaries_for(self, zone: dns.name.Name) -> list[Secondary]:
        return [s for s in self.secondaries if s.serves(zone)]


def _key_name(name: str) -> str:
    return dns.name.from_text(name).to_text().lower()


def _name(value, key, report, origin=None) -> str:
    if not isinstance(value, str) or not value:
        report(key, f"must be a domain name, not {value!r}")
        return ""
    try:
        return dns.name.from_text(value, origin or dns.name.root).to_text().lower()
    except dns.exception.DNSException as exc:
        report(key, f"{value!r} is not a domain name: {exc}")
        return ""


def _strings(table, name, key, report) -> list:
    value = table.get(name, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        report(f"{key}.{name}", f"must be a list of strings, not {value!r}")
        return []
    return value


def _unknown(table, known, key, report) -> None:
    for k in table:
        if k not in known:
            report(f"{key}.{k}", f"unknown key (known: {', '.join(known)})")


def parse_management(table: dict, report) -> Management:
    """Validate the management keys of ``[dns]`` (the others belong to the server)."""
    keys = []
    tsig = table.get("tsig", {})
    if not isinstance(tsig, dict):
        report("tsig", "must be a table of keys: [dns.tsig.\"NAME\"]")
        tsig = {}
    for name, entry in tsig.items():
        key = _parse_key(name, entry, f"tsig.{name}", report)
        if key is not None:
            keys.append(key)
    known_keys = {_key_name(k.name) for k in keys}

    secondaries = []
    entries = table.get("secondary", [])
    if not isinstance(entries, list):
        report("secondary", "must be an array of tables: [[dns.secondary]]")
        entries = []
    for i, entry in enumerate(entries):
        sec = _parse_secondary(entry, f"secondary[{i}]", known_keys, report)
        if sec is not None:
            if any(s.name == sec.name for s in secondaries):
                report(f"secondary[{i}].name", f"duplicate secondary {sec.name!r}")
            secondaries.append(sec)

    names = []
    entries = table.get("health_name", [])
    if not isinstance(entries, list):
        report("health_name", "must be an array of tables: [[dns.health_name]]")
        entries = []
    for i, entry in enumerate(entries):
        hn = _parse_health_name(entry, f"health_name[{i}]", report)
        if hn is not None:
            if any(h.name == hn.name for h in names):
                report(f"health_name[{i}].name", f"{hn.name} is already a health name")
            names.append(hn)
    history = table.get("ixfr_history", IXFR_HISTORY)
    if not isinstance(history, int) or isinstance(history, bool) \
            or not 0 <= history <= IXFR_HISTORY_MAX:
        report("ixfr_history", f"must be a whole number from 0 to {IXFR_HISTORY_MAX} "
                               f"(differences kept per zone), not {history!r}")
        history = IXFR_HISTORY
    return Management(tuple(keys), tuple(secondaries), tuple(names), history)


def _parse_key(name, entry, key, report) -> TsigKey | None:
    if not isinstance(entry, dict):
        report(key, "must be a table with algorithm and secret")
        return None
    _unknown(entry, ("algorithm", "secret", "secret_file"), key, report)
    if not _name(name, key, report):
        return None
    algorithm = entry.get("algorithm", "hmac-sha256")
    if algorithm not in ALGORITHMS:
        report(f"{key}.algorithm", f"{algorithm!r} is not supported (known: {', '.join(ALGORITHMS)})")
        return None
    text = entry.get("secret")
    if "secret_file" in entry:
        if text is not None:
            report(key, "give secret or secret_file, not both")
            return None
        path = entry["secret_file"]
        try:
            with open(path) as f:
                text = f.read().strip()
        except (OSError, TypeError) as exc:
            report(f"{key}.secret_file", f"cannot read {path!r}: {getattr(exc, 'strerror', exc)}")
            return None
    if not isinstance(text, str) or not text:
        report(f"{key}.secret", "is required: the key's secret, base64 (tsig-keygen, "
                                "openssl rand -base64 32)")
        return None
    try:
        secret = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        report(f"{key}.secret", "is not valid base64")
        return None
    if len(secret) < 16:
        report(f"{key}.secret", f"is {len(secret)} bytes: use at least 16 (RFC 8945 §6)")
        return None
    return TsigKey(name, algorithm, secret)


def _parse_secondary(entry, key, known_keys, report) -> Secondary | None:
    if not isinstance(entry, dict):
        report(key, "must be a table")
        return None
    _unknown(entry, ("name", "addresses", "key", "zones", "notify"), key, report)
    name = entry.get("name", key)
    if not isinstance(name, str):
        report(f"{key}.name", f"must be a string, not {name!r}")
        name = key
    networks = []
    for j, text in enumerate(_strings(entry, "addresses", key, report)):
        try:
            networks.append(ipaddress.ip_network(text, strict=False))
        except ValueError:
            report(f"{key}.addresses[{j}]", f"{text!r} is not an IP address or network")
    if not networks and "addresses" not in entry:
        report(f"{key}.addresses", "is required: the secondary's addresses (IPs or networks)")
    key_name = entry.get("key", "")
    if not isinstance(key_name, str):
        report(f"{key}.key", f"must be a TSIG key name, not {key_name!r}")
        key_name = ""
    if key_name:
        try:
            if _key_name(key_name) not in known_keys:
                report(f"{key}.key", f"no TSIG key {key_name!r} in [dns.tsig] "
                                     f"(known: {', '.join(sorted(known_keys)) or 'none'})")
        except dns.exception.DNSException:
            report(f"{key}.key", f"{key_name!r} is not a key name")
    zones = tuple(z for z in (_name(z, f"{key}.zones[{j}]", report)
                              for j, z in enumerate(_strings(entry, "zones", key, report))) if z)
    notify = []
    if "notify" in entry:
        for j, text in enumerate(_strings(entry, "notify", key, report)):
            target = _endpoint(text)
            if target is None:
                report(f"{key}.notify[{j}]", f"{text!r} is not IP or IP:PORT ([V6]:PORT)")
            else:
                notify.append(target)
    else:
        notify = [(str(n.network_address), 53) for n in networks
                  if n.num_addresses == 1]
    return Secondary(name, tuple(networks), key_name, zones, tuple(notify))


def _endpoint(text: str) -> tuple[str, int] | None:
    try:
        return str(ipaddress.ip_address(text)), 53
    except ValueError:
        pass
    host, sep, port = text.rpartition(":")
    try:
        ip = str(ipaddress.ip_address(host.strip("[]")))
        number = int(port)
    except ValueError:
        return None
    return (ip, number) if sep and 0 < number < 65536 else None


def _parse_health_name(entry, key, report) -> HealthName | None:
    if not isinstance(entry, dict):
        report(key, "must be a table")
        return None
    _unknown(entry, ("zone", "name", "policy", "ttl", "addresses"), key, report)
    zone = _name(entry.get("zone"), f"{key}.zone", report)
    if zone:
        from clusterkit_dns.zoneedit import ZoneEditError, zone_name  # only with health names

        try:
            zone_name(zone)  # it is written as DIR/<zone>.zone: checked as a file name too
        except ZoneEditError as exc:
            report(f"{key}.zone", str(exc))
            zone = ""
    name = _name(entry.get("name"), f"{key}.name", report, dns.name.from_text(zone) if zone else None)
    if zone and name and not dns.name.from_text(name).is_subdomain(dns.name.from_text(zone)):
        report(f"{key}.name", f"{name} is not inside zone {zone}")
    policy = entry.get("policy")
    if not isinstance(policy, str) or _endpoint(policy) is None or _endpoint(policy) == (policy, 53):
        report(f"{key}.policy", f"must be a policy's VIP:PORT, not {policy!r}")
        policy = ""
    ttl = read_number(entry, "ttl", int, 30, 0, 86400, report, f"{key}.ttl")
    addresses = entry.get("addresses", {})
    pairs = []
    if not isinstance(addresses, dict):
        report(f"{key}.addresses", "must be a table NODE = \"ADDRESS\"")
        addresses = {}
    for node, address in addresses.items():
        try:
            pairs.append((node, str(ipaddress.ip_address(address))))
        except (ValueError, TypeError):
            report(f"{key}.addresses.{node}", f"{address!r} is not an IP address")
    if not (zone and name and policy):
        return None
    return HealthName(zone, name, policy, ttl, tuple(pairs))
