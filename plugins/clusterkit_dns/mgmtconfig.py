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

from clusterkit.definition.tables import Key, Table, Tables, read
from clusterkit.definition.values import ip_problem, problem_of, shown

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


def _name(value: str, origin=None) -> str:
    """``value`` as an absolute lower-case domain name (``ValueError`` says why not)."""
    if not value:
        raise ValueError("must be a domain name, not ''")  # dnspython reads "" as the root
    try:
        return dns.name.from_text(value, origin or dns.name.root).to_text().lower()
    except dns.exception.DNSException as exc:
        raise ValueError(f"{shown(value)} is not a domain name: {exc}") from None


def _zone(value: str) -> str:
    """A health name's zone is written as DIR/<zone>.zone: checked as a file name too."""
    from clusterkit_dns.zoneedit import zone_name  # only with health names

    return zone_name(_name(value))


def _network_problem(text: str) -> str | None:
    try:
        ipaddress.ip_network(text, strict=False)
    except ValueError:
        return f"{shown(text)} is not an IP address or network"
    return None


def _notify_problem(text: str) -> str | None:
    return None if _endpoint(text) else f"{shown(text)} is not IP or IP:PORT ([V6]:PORT)"


def _policy_problem(text: str) -> str | None:
    target = _endpoint(text)
    return None if target and target != (text, 53) else f"must be a policy's VIP:PORT, not {shown(text)}"


def _algorithm_problem(value: str) -> str | None:
    return None if value in ALGORITHMS else \
        f"{shown(value)} is not supported (known: {', '.join(ALGORITHMS)})"


TSIG_KEY = Table({"algorithm": Key(str, default="hmac-sha256", check=_algorithm_problem),
                  "secret": Key(str), "secret_file": Key(str)})
SECONDARY = Table({
    "name": Key(str),
    "addresses": Key(list, items=str, check=_network_problem,
                     required="the secondary's addresses (IPs or networks)"),
    "key": Key(str, default=""),
    "zones": Key(list, items=str, check=problem_of(_name), default=()),
    "notify": Key(list, items=str, check=_notify_problem),
})
HEALTH_NAME = Table({
    "zone": Key(str, required="the zone the name is in", check=problem_of(_zone)),
    "name": Key(str, required="relative to the zone, or absolute"),
    "policy": Key(str, required="a policy's VIP:PORT", check=_policy_problem),
    "ttl": Key(int, default=30, low=0, high=86400),
    "addresses": Table(extra=Key(str, check=ip_problem)),
})
MANAGEMENT = Table({
    "tsig": Table(extra=TSIG_KEY),
    "secondary": Tables(SECONDARY),
    "health_name": Tables(HEALTH_NAME),
    "ixfr_history": Key(int, default=IXFR_HISTORY, low=0, high=IXFR_HISTORY_MAX),
})
KEYS = tuple(MANAGEMENT.keys)


def parse_management(table: dict, report) -> Management:
    """Validate the management keys of ``[dns]`` (the others belong to the server).

    The keys are declared (:data:`MANAGEMENT`) and read by the core's table
    reader; what it cannot judge alone (a key's secret, names relative to a
    zone, references between tables, duplicates) is checked here.
    """
    values = read({k: v for k, v in table.items() if k in KEYS}, MANAGEMENT, report)
    given = table.get("tsig") if isinstance(table.get("tsig"), dict) else {}
    keys = [k for k in (_parse_key(name, entry, f"tsig.{name}", report, given.get(name) or {})
                        for name, entry in values["tsig"].items()) if k is not None]
    known_keys = {_key_name(k.name) for k in keys}
    secondaries = []
    for i, entry in enumerate(values["secondary"]):
        sec = _parse_secondary(entry, f"secondary[{i}]", known_keys, report)
        if any(s.name == sec.name for s in secondaries):
            report(f"secondary[{i}].name", f"duplicate secondary {sec.name!r}")
        secondaries.append(sec)
    names = []
    for i, entry in enumerate(values["health_name"]):
        hn = _parse_health_name(entry, f"health_name[{i}]", report)
        if hn is not None:
            if any(h.name == hn.name for h in names):
                report(f"health_name[{i}].name", f"{hn.name} is already a health name")
            names.append(hn)
    return Management(tuple(keys), tuple(secondaries), tuple(names), values["ixfr_history"])


def _parse_key(name: str, entry: dict, key: str, report, given: dict) -> TsigKey | None:
    """``entry`` as the reader took it; ``given`` as written (a secret of the wrong type is
    reported by the reader already, not again as missing)."""
    problem = problem_of(_name)(name)
    if problem:
        report(key, problem)
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
        except (OSError, ValueError) as exc:
            report(f"{key}.secret_file", f"cannot read {shown(path)}: {getattr(exc, 'strerror', exc)}")
            return None
    if not text:
        if "secret" not in given or isinstance(given["secret"], str):
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
    return TsigKey(name, algorithm=entry["algorithm"], secret=secret)


def _parse_secondary(entry: dict, key: str, known_keys: set, report) -> Secondary:
    networks = [ipaddress.ip_network(text, strict=False) for text in entry.get("addresses", ())]
    key_name = entry["key"]
    if key_name:
        try:
            if _key_name(key_name) not in known_keys:
                report(f"{key}.key", f"no TSIG key {key_name!r} in [dns.tsig] "
                                     f"(known: {', '.join(sorted(known_keys)) or 'none'})")
        except dns.exception.DNSException:
            report(f"{key}.key", f"{shown(key_name)} is not a key name")
    zones = tuple(_name(z) for z in entry["zones"])
    if "notify" in entry:
        notify = [_endpoint(text) for text in entry["notify"]]
    else:
        notify = [(str(n.network_address), 53) for n in networks if n.num_addresses == 1]
    return Secondary(entry.get("name", key), tuple(networks), key_name, zones, tuple(notify))


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


def _parse_health_name(entry: dict, key: str, report) -> HealthName | None:
    zone = _name(entry["zone"]) if "zone" in entry else ""
    name = ""
    if "name" in entry:
        try:
            name = _name(entry["name"], dns.name.from_text(zone) if zone else None)
        except ValueError as exc:
            report(f"{key}.name", str(exc))
    if zone and name and not dns.name.from_text(name).is_subdomain(dns.name.from_text(zone)):
        report(f"{key}.name", f"{name} is not inside zone {zone}")
        name = ""
    if not (zone and name and "policy" in entry):
        return None
    pairs = tuple((node, str(ipaddress.ip_address(address)))
                  for node, address in entry["addresses"].items())
    return HealthName(zone, name, entry["policy"], entry["ttl"], pairs)
