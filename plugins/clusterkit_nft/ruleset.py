"""The nftables text for the whole data plane: one ``netdev`` table, replaced in one transaction.

Layout (``nft list table netdev clusterkit`` shows it):

* ``inI``: an ingress chain per interface the members are reached on, that
  sends ``VIP . port`` to the policy's chain (``ip daddr . tcp dport vmap``);
* ``pN``: hashes the flow (``jhash ip saddr . tcp sport``, or ``ip saddr``
  alone for ``sh`` and persistence) into ``BUCKETS`` buckets and jumps through
  the map ``nN`` (bucket → member chain);
* ``mN_J``: counts and forwards to member J: the frame leaves the same
  interface unchanged but for its Ethernet addresses (``ether saddr`` the
  manager's, ``ether daddr`` the member's) — direct routing, the member
  answers the client itself.

While a member drains, ``oN`` is the map with it and ``nN`` the map without
it: a new flow (a SYN) is written into the set ``fN`` and takes ``nN`` as do
the flows in ``fN``; every other packet takes ``oN``, so the connections the
member had stay on it and new ones go elsewhere. ``fN`` is bounded
(``FRESH_MAX``): when it is full new flows of the drained member's buckets go
to it as before the drain.

The text starts with ``table ... {}`` and ``delete table``: ``nft -f`` of it is
one transaction that swaps the old table for the new one, so a packet sees
either the old rules or the new ones, never a half-filled table. Counters are
named objects written with the values last read, so they carry across.
"""

from __future__ import annotations

from dataclasses import dataclass, field

TABLE = "clusterkit"
FRESH_MAX = 65536


@dataclass(frozen=True)
class Member:
    chain: str          # mN_J
    node: str
    mac: str
    device: str


@dataclass
class PolicyPlan:
    index: int
    key: str
    vip: str
    port: int
    by_client: bool                  # hash the client address alone (sh, persistence)
    device: str
    members: list[Member]
    new: list[str | None]            # bucket -> member chain for new flows
    old: list[str | None] | None = None   # bucket -> member chain for the rest (a drain), or None
    fresh_timeout: int = 300
    fresh: list[str] = field(default_factory=list)   # elements of fN to carry over (nft syntax)

    def hashed(self) -> str:
        key = "ip saddr" if self.by_client else "ip saddr . tcp sport"
        return f"meta mark set jhash {key} mod {len(self.new)} seed 0x636b"

    def flow_key(self) -> str:
        return "ip saddr" if self.by_client else "ip saddr . tcp sport"


def _map(name: str, buckets: list[str | None]) -> str:
    elements = ", ".join(f"{b} : goto {chain}" for b, chain in enumerate(buckets) if chain)
    body = f"\t\telements = {{ {elements} }}\n" if elements else ""
    return f"\tmap {name} {{\n\t\ttype mark : verdict\n{body}\t}}\n"


def render(plans: list[PolicyPlan], macs: dict[str, str], counters: dict[str, tuple[int, int]]) -> str:
    """The transaction text. ``macs``: the manager's MAC per interface; ``counters``:
    ``{name: (packets, bytes)}`` to start the named counters with."""
    out = [f"table netdev {TABLE} {{}}\n", f"delete table netdev {TABLE}\n", f"table netdev {TABLE} {{\n"]

    def counter(name: str) -> None:
        packets, octets = counters.get(name, (0, 0))
        out.append(f"\tcounter {name} {{\n\t\tpackets {packets} bytes {octets}\n\t}}\n")

    devices: dict[str, list[PolicyPlan]] = {}
    for plan in plans:
        n = plan.index
        devices.setdefault(plan.device, []).append(plan)
        for m in plan.members:
            counter(f"c{m.chain[1:]}")
            counter(f"s{m.chain[1:]}")
        counter(f"x{n}")  # packets no member took (none up): they go on to the manager's stack
        out.append(_map(f"n{n}", plan.new))
        if plan.old is not None:
            key = "ipv4_addr" if plan.by_client else "ipv4_addr . inet_service"
            elements = f"\t\telements = {{ {', '.join(plan.fresh)} }}\n" if plan.fresh else ""
            out.append(f"\tset f{n} {{\n\t\ttype {key}\n\t\tsize {FRESH_MAX}\n"
                       f"\t\tflags dynamic,timeout\n\t\ttimeout {plan.fresh_timeout}s\n{elements}\t}}\n")
            out.append(_map(f"o{n}", plan.old))
        for m in plan.members:
            out.append(f"\tchain {m.chain} {{\n"
                       f"\t\tcounter name \"c{m.chain[1:]}\"\n"
                       f"\t\ttcp flags & (syn | ack) == syn counter name \"s{m.chain[1:]}\"\n"
                       f"\t\tether saddr set {macs[m.device]} ether daddr set {m.mac} "
                       f"fwd to \"{m.device}\"\n\t}}\n")
        rules = []
        if plan.old is not None:
            key = plan.flow_key()
            rules += [f"tcp flags & (syn | ack) == syn update @f{n} {{ {key} }}",
                      f"{key} @f{n} update @f{n} {{ {key} }} {plan.hashed()} meta mark vmap @n{n}",
                      f"{plan.hashed()} meta mark vmap @o{n}"]
        else:
            rules.append(f"{plan.hashed()} meta mark vmap @n{n}")
        rules.append(f"meta mark set 0 counter name \"x{n}\"")
        out.append(f"\tchain p{n} {{\n" + "".join(f"\t\t{r}\n" for r in rules) + "\t}\n")
    for i, (device, on) in enumerate(sorted(devices.items())):
        targets = ", ".join(f"{p.vip} . {p.port} : goto p{p.index}" for p in on)
        out.append(f"\tchain in{i} {{\n"
                   f"\t\ttype filter hook ingress device \"{device}\" priority 0; policy accept;\n"
                   f"\t\tip daddr . tcp dport vmap {{ {targets} }}\n\t}}\n")
    out.append("}\n")
    return "".join(out)


def removal() -> str:
    """The transaction that takes the whole data plane away (``close``)."""
    return f"table netdev {TABLE} {{}}\ndelete table netdev {TABLE}\n"
