"""The nftables text for the whole data plane: two tables, replaced in one transaction.

Direct routing (``nft list table netdev clusterkit``):

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

NAT (``nft list table ip clusterkit``): ``pre`` (nat prerouting) sends
``VIP . port`` to ``pN``, which hashes and jumps through ``nN`` as above, and
``mN_J`` counts the connection, marks it (``ct mark``, the member's
:func:`ct_mark`) and DNATs it to the member's address and port. Only a
connection's first packet passes the nat hook: conntrack carries the rest
both ways (the member routes its replies through the manager), so a drain
needs no set: the drained member leaves ``nN`` and its connections stay.
``forwarded`` (filter forward) counts each member's incoming packets by ``ct mark``.

``nft -f`` of the text is one transaction, so a packet sees either the old
rules or the new ones, never a half-filled table. The first one replaces any
table of those names (``table {}``, ``delete table``, the new table). Later
ones keep the tables and their objects: ``flush table`` (every rule), ``flush
map`` (every bucket map), delete what is gone or declared otherwise now,
then declare everything with its rules and elements again. The named
counters and the drain sets' flows therefore live on across changes.
"""

from __future__ import annotations

from dataclasses import dataclass

TABLE = "clusterkit"
FAMILIES = ("netdev", "ip")  # direct routing, NAT
FRESH_MAX = 65536
DELETE_ORDER = ("map", "set", "chain", "counter")  # what refers to what goes first
MARK_BASE = 0x636b0000  # ct marks of NAT members: MARK_BASE + N * 256 + J (see ct_mark)


@dataclass(frozen=True)
class Member:
    chain: str          # mN_J
    node: str
    mac: str = ""       # direct routing: where the frame goes
    device: str = ""
    address: str = ""   # NAT: IP:port the connection is DNATed to


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
    nat: bool = False                # conntrack DNAT instead of direct routing
    ports: tuple[int, int] | None = None  # a range forwarded with the port (FTP's passive ports)

    def hashed(self) -> str:
        return f"meta mark set jhash {self.flow_key()} mod {len(self.new)} seed 0x636b"

    def flow_key(self) -> str:
        return "ip saddr" if self.by_client else "ip saddr . tcp sport"

    def dispatch(self) -> list[str]:
        """The ``VIP . port : goto pN`` elements that bring its packets to the policy's chain."""
        out = [f"{self.vip} . {self.port} : goto p{self.index}"]
        if self.ports:
            out.append(f"{self.vip} . {self.ports[0]}-{self.ports[1]} : goto p{self.index}")
        return out


def ct_mark(member: Member) -> int:
    """The conntrack mark of a NAT member's connections (``mN_J``: N below 2**16, J below 256)."""
    n, _, j = member.chain[1:].partition("_")
    return MARK_BASE + int(n) * 256 + int(j) if int(n) < 2 ** 16 and int(j) < 256 else 0


def render(plans: list[PolicyPlan], macs: dict[str, str],
           previous: dict[str, str] | None = None) -> tuple[str, dict[str, str]]:
    """The transaction text, and what it declares (``{"netdev map n0": declaration}``) for the
    next one.

    ``macs``: the manager's MAC per interface; ``previous``: what the tables have (the last
    transaction's declarations), or ``None`` to replace whatever tables are there.
    """
    declared: dict[str, str] = {}
    contents: dict[str, list[str]] = {family: [] for family in FAMILIES}

    def declare(family: str, kind: str, name: str, head: str = "", body: str = "") -> None:
        declared[f"{family} {kind} {name}"] = head
        contents[family].append(f"\t{kind} {name} {{\n{head}{body}\t}}\n")

    devices: dict[str, list[PolicyPlan]] = {}
    for plan in plans:
        n, family = plan.index, "ip" if plan.nat else "netdev"
        if not plan.nat:
            devices.setdefault(plan.device, []).append(plan)
        for m in plan.members:
            declare(family, "counter", f"c{m.chain[1:]}")
            declare(family, "counter", f"s{m.chain[1:]}")
        declare(family, "counter", f"x{n}")  # packets no member took (none up): to the manager
        declare(family, "map", f"n{n}", "\t\ttype mark : verdict\n", _elements(plan.new))
        if plan.old is not None:
            key = "ipv4_addr" if plan.by_client else "ipv4_addr . inet_service"
            declare(family, "set", f"f{n}", f"\t\ttype {key}\n\t\tsize {FRESH_MAX}\n"
                    f"\t\tflags dynamic,timeout\n\t\ttimeout {plan.fresh_timeout}s\n")
            declare(family, "map", f"o{n}", "\t\ttype mark : verdict\n", _elements(plan.old))
        for m in plan.members:
            if plan.nat:
                target = (f"meta l4proto tcp meta mark set 0 ct mark set {ct_mark(m):#x} "
                          f"dnat to {m.address}\n")
                declare(family, "chain", m.chain, body=(
                    f"\t\tcounter name \"s{m.chain[1:]}\"\n\t\t{target}"))
            else:
                declare(family, "chain", m.chain, body=(
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
        declare(family, "chain", f"p{n}", body="".join(f"\t\t{r}\n" for r in rules))
    for i, (device, on) in enumerate(sorted(devices.items())):
        targets = ", ".join(t for p in on for t in p.dispatch())
        declare("netdev", "chain", f"in{i}",
                f"\t\ttype filter hook ingress device \"{device}\" priority 0; policy accept;\n",
                f"\t\tip daddr . tcp dport vmap {{ {targets} }}\n")
    nat = [p for p in plans if p.nat]
    if nat:
        targets = ", ".join(t for p in nat for t in p.dispatch())
        declare("ip", "chain", "pre", "\t\ttype nat hook prerouting priority dstnat; policy accept;\n",
                f"\t\tip daddr . tcp dport vmap {{ {targets} }}\n")
        marks = ", ".join(f"{ct_mark(m):#x} : \"c{m.chain[1:]}\"" for p in nat for m in p.members
                          if ct_mark(m))
        declare("ip", "chain", "forwarded", "\t\ttype filter hook forward priority 0; policy accept;\n",
                f"\t\tct direction original counter name ct mark map {{ {marks} }}\n"
                if marks else "")
    out = []
    for family in FAMILIES:
        if previous is None:
            out += [f"table {family} {TABLE} {{}}\n", f"delete table {family} {TABLE}\n"]
        else:
            out += [f"table {family} {TABLE} {{}}\n", f"flush table {family} {TABLE}\n"]
            out += [f"flush {_named(obj)}\n" for obj in previous
                    if obj.startswith(f"{family} map ")]
            stale = [obj for obj, head in previous.items()
                     if obj.startswith(family + " ") and declared.get(obj) != head]
            for kind in DELETE_ORDER:
                out += [f"delete {_named(obj)}\n" for obj in stale
                        if obj.startswith(f"{family} {kind} ")]
        out += [f"table {family} {TABLE} {{\n", *contents[family], "}\n"]
    return "".join(out), declared


def _named(obj: str) -> str:
    """``"ip map n0"`` → ``"map ip clusterkit n0"``, as ``flush``/``delete`` name it."""
    family, kind, name = obj.split(" ")
    return f"{kind} {family} {TABLE} {name}"


def _elements(buckets: list[str | None]) -> str:
    elements = ", ".join(f"{b} : goto {chain}" for b, chain in enumerate(buckets) if chain)
    return f"\t\telements = {{ {elements} }}\n" if elements else ""


def removal() -> str:
    """The transaction that takes the whole data plane away (``close``)."""
    return "".join(f"table {family} {TABLE} {{}}\ndelete table {family} {TABLE}\n"
                   for family in FAMILIES)
