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

``nft -f`` of the text is one transaction, so a packet sees either the old
rules or the new ones, never a half-filled table. The first one replaces any
table of that name (``table {}``, ``delete table``, the new table). Later
ones keep the table and its objects: ``flush table`` (every rule), ``flush
map`` (every bucket map), delete what is gone or declared otherwise now,
then declare everything with its rules and elements again. The named
counters and the drain sets' flows therefore live on across changes.
"""

from __future__ import annotations

from dataclasses import dataclass

TABLE = "clusterkit"
FRESH_MAX = 65536
DELETE_ORDER = ("map", "set", "chain", "counter")  # what refers to what goes first


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

    def hashed(self) -> str:
        key = "ip saddr" if self.by_client else "ip saddr . tcp sport"
        return f"meta mark set jhash {key} mod {len(self.new)} seed 0x636b"

    def flow_key(self) -> str:
        return "ip saddr" if self.by_client else "ip saddr . tcp sport"


def render(plans: list[PolicyPlan], macs: dict[str, str],
           previous: dict[str, str] | None = None) -> tuple[str, dict[str, str]]:
    """The transaction text, and what it declares (``{"map n0": declaration}``) for the next one.

    ``macs``: the manager's MAC per interface; ``previous``: what the table has (the last
    transaction's declarations), or ``None`` to replace whatever table is there.
    """
    declared: dict[str, str] = {}
    contents: list[str] = []

    def declare(kind: str, name: str, head: str = "", body: str = "") -> None:
        declared[f"{kind} {name}"] = head
        contents.append(f"\t{kind} {name} {{\n{head}{body}\t}}\n")

    devices: dict[str, list[PolicyPlan]] = {}
    for plan in plans:
        n = plan.index
        devices.setdefault(plan.device, []).append(plan)
        for m in plan.members:
            declare("counter", f"c{m.chain[1:]}")
            declare("counter", f"s{m.chain[1:]}")
        declare("counter", f"x{n}")  # packets no member took (none up): on to the manager's stack
        declare("map", f"n{n}", "\t\ttype mark : verdict\n", _elements(plan.new))
        if plan.old is not None:
            key = "ipv4_addr" if plan.by_client else "ipv4_addr . inet_service"
            declare("set", f"f{n}", f"\t\ttype {key}\n\t\tsize {FRESH_MAX}\n"
                    f"\t\tflags dynamic,timeout\n\t\ttimeout {plan.fresh_timeout}s\n")
            declare("map", f"o{n}", "\t\ttype mark : verdict\n", _elements(plan.old))
        for m in plan.members:
            declare("chain", m.chain, body=(
                f"\t\tcounter name \"c{m.chain[1:]}\"\n"
                f"\t\ttcp flags & (syn | ack) == syn counter name \"s{m.chain[1:]}\"\n"
                f"\t\tether saddr set {macs[m.device]} ether daddr set {m.mac} "
                f"fwd to \"{m.device}\"\n"))
        rules = []
        if plan.old is not None:
            key = plan.flow_key()
            rules += [f"tcp flags & (syn | ack) == syn update @f{n} {{ {key} }}",
                      f"{key} @f{n} update @f{n} {{ {key} }} {plan.hashed()} meta mark vmap @n{n}",
                      f"{plan.hashed()} meta mark vmap @o{n}"]
        else:
            rules.append(f"{plan.hashed()} meta mark vmap @n{n}")
        rules.append(f"meta mark set 0 counter name \"x{n}\"")
        declare("chain", f"p{n}", body="".join(f"\t\t{r}\n" for r in rules))
    for i, (device, on) in enumerate(sorted(devices.items())):
        targets = ", ".join(f"{p.vip} . {p.port} : goto p{p.index}" for p in on)
        declare("chain", f"in{i}",
                f"\t\ttype filter hook ingress device \"{device}\" priority 0; policy accept;\n",
                f"\t\tip daddr . tcp dport vmap {{ {targets} }}\n")
    if previous is None:
        out = [f"table netdev {TABLE} {{}}\n", f"delete table netdev {TABLE}\n"]
    else:
        out = [f"table netdev {TABLE} {{}}\n", f"flush table netdev {TABLE}\n"]
        out += [f"flush {obj.replace(' ', f' netdev {TABLE} ')}\n" for obj in previous
                if obj.startswith("map ")]
        stale = [obj for obj, head in previous.items() if declared.get(obj) != head]
        for kind in DELETE_ORDER:
            out += [f"delete {obj.replace(' ', f' netdev {TABLE} ')}\n" for obj in stale
                    if obj.startswith(kind + " ")]
    out += [f"table netdev {TABLE} {{\n", *contents, "}\n"]
    return "".join(out), declared


def _elements(buckets: list[str | None]) -> str:
    elements = ", ".join(f"{b} : goto {chain}" for b, chain in enumerate(buckets) if chain)
    return f"\t\telements = {{ {elements} }}\n" if elements else ""


def removal() -> str:
    """The transaction that takes the whole data plane away (``close``)."""
    return f"table netdev {TABLE} {{}}\ndelete table netdev {TABLE}\n"
