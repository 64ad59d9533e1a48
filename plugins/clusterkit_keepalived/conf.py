"""keepalived.conf for the cluster's public IPs: one VRRP instance between the managers.

Every manager starts BACKUP with ``nopreempt``: the first to win holds the
addresses until it fails, and a manager that comes back does not take them
back. Adverts go ``unicast`` to the other managers (no multicast needed). The
track script asks this host's clusterkit daemon over its control socket, so a
daemon that hangs or dies gives the addresses up; ``notify_*`` tells the
daemon of every transition (it also polls the addresses, in case one is lost).
"""

from __future__ import annotations

import ipaddress
import os
import shlex
import subprocess
import sys

from clusterkit_keepalived.settings import Settings


def interface_of(ip: str) -> str:
    """The interface holding ``ip`` here (``ip -o addr``); ``ValueError`` when none does."""
    out = subprocess.run(["ip", "-o", "addr", "show"], capture_output=True, text=True,
                         timeout=10, check=True).stdout
    for line in out.splitlines():
        fields = line.split()
        if len(fields) > 3 and fields[2] in ("inet", "inet6") and fields[3].split("/")[0] == ip:
            return fields[1].split("@")[0]
    raise ValueError(f"no interface holds {ip} on this host: set [vrrp] interface")


def addresses(interface: str) -> set[str]:
    """The addresses on ``interface`` now."""
    out = subprocess.run(["ip", "-o", "addr", "show", "dev", interface], capture_output=True,
                         text=True, timeout=10, check=True).stdout
    return {f[3].split("/")[0] for f in (line.split() for line in out.splitlines())
            if len(f) > 3 and f[2] in ("inet", "inet6")}


def release(interface: str, ips: list[str]) -> list[str]:
    """Take ``ips`` off ``interface`` (what a killed keepalived left); returns those removed."""
    removed = []
    for ip in sorted(set(ips) & addresses(interface)):
        prefix = ipaddress.ip_address(ip).max_prefixlen
        subprocess.run(["ip", "addr", "del", f"{ip}/{prefix}", "dev", interface],
                       capture_output=True, timeout=10, check=True)
        removed.append(ip)
    return removed


def vips(cluster) -> list[str]:
    """The addresses VRRP carries: the manager's public IPs that are no host's own."""
    own = {h.ip for h in cluster.hosts.values()}
    return [ip for ip in cluster.manager.public_ips if ip not in own]


def _q(text: str) -> str:
    """A keepalived string: quoted, and refused if it could break out of its quotes."""
    if any(c in text for c in '"\n\r\\'):
        raise ValueError(f"{text!r} cannot be written into keepalived.conf")
    return f'"{text}"'


def command(config_path: str, host: str, *args: str) -> str:
    """``clusterkit manager ARGS -c FILE --as HOST`` with this Python's clusterkit (a script whose
    ``#!`` names the virtualenv's python, so keepalived may run it by its real path).

    keepalived splits a script line at blanks and runs no shell: a path with a
    blank (or a quote) is refused rather than split.
    """
    program = os.path.join(os.path.dirname(sys.executable), "clusterkit")
    words = [program, "manager", *args, "-c", os.path.abspath(config_path), "--as", host]
    for word in words:
        if not word or any(c.isspace() or c in "\"'\\" for c in word):
            raise ValueError(f"{word!r} cannot be a word of a keepalived script line")
    return " ".join(words)


def check_script(state_dir: str) -> str:
    """The track script's text. A shell script, because keepalived runs the real path of a
    program (``enable_script_security``), and a virtualenv's python by its real path is
    not the virtualenv's."""
    for text in (sys.executable, state_dir):
        if any(c in text for c in "\n\r\0"):
            raise ValueError(f"{text!r} cannot be written into a script")
    return (f"#!/bin/sh\nexec {shlex.quote(sys.executable)} -m clusterkit_keepalived.check "
            f"{shlex.quote(state_dir)}\n")


def render(cluster, host, settings: Settings, interface: str, config_path: str, check: str) -> str:
    """The whole keepalived.conf of ``host`` (a manager or a standby); ``check`` is the path
    of the track script (:func:`check_script`)."""
    peers = [h.ip for h in [cluster.manager, *cluster.standbys] if h.name != host.name]
    lines = [
        "# Written by clusterkit (the keepalived plugin): edits are replaced.",
        "global_defs {",
        f"    router_id {_q(host.name)}",
        "    vrrp_version 3",  # adverts in centiseconds (version 2 counts whole seconds)
        "    script_user root",
        "    enable_script_security",
        "    vrrp_garp_master_delay 1",
        "    vrrp_garp_master_repeat 3",
        "}",
        "vrrp_script clusterkit_daemon {",
        f"    script {_q(check)}",
        f"    interval {max(settings.advert_int, 0.5):g}",
        f"    timeout {max(2 * settings.advert_int, 1):g}",
        "    fall 2",
        "    rise 1",
        "}",
        "vrrp_instance clusterkit {",
        "    state BACKUP",
        "    nopreempt",
        f"    interface {interface}",
        f"    virtual_router_id {settings.virtual_router_id}",
        f"    priority {host.priority}",
        f"    advert_int {settings.advert_int:g}",
        f"    unicast_src_ip {host.ip}",
        "    unicast_peer {",
        *(f"        {ip}" for ip in peers),
        "    }",
        "    virtual_ipaddress {",
        *(f"        {ip}/{ipaddress.ip_address(ip).max_prefixlen} dev {interface}"
          for ip in vips(cluster)),
        "    }",
        "    track_script {",
        "        clusterkit_daemon",
        "    }",
    ]
    for state in ("MASTER", "BACKUP", "FAULT", "STOP"):
        lines.append(f"    notify_{state.lower()} "
                     f"{_q(command(config_path, host.name, 'vrrp-notify', state))}")
    lines.append("}")
    return "\n".join(lines) + "\n"
