"""The ``ssh`` transport: rsync over ssh with the manager's key (options ``user``, ``port``, ``key``, ``known_hosts``).

In the manager's daemon every rsync and rename to a node goes through that
node's master connection (:mod:`.sshmaster`); elsewhere (``sync verify``) each
command connects directly. Host keys: ``StrictHostKeyChecking=accept-new``, a
node's key is learnt on first contact and a changed key is refused.
"""

from __future__ import annotations

import asyncio
import shlex

from clusterkit.registry import TransportKind
from clusterkit.standby import epoch, fence

from .options import lab_path
from .sshmaster import Masters

DEFAULT_KEY = "/etc/clusterkit/id_ed25519"


def _key(node) -> str:
    return node.options.get("key", DEFAULT_KEY)


def _target(node) -> str:
    return f"{node.options.get('user', 'root')}@{node.ip}"


def ssh_command(node) -> list[str]:
    """ssh with the node's port, key and known_hosts: what every connection to it shares."""
    ssh = ["ssh", "-p", str(int(node.options.get("port", 22))), "-i", _key(node),
           "-o", "BatchMode=yes", "-o", "ConnectTimeout=5",
           "-o", "ServerAliveInterval=5", "-o", "ServerAliveCountMax=3",
           "-o", "StrictHostKeyChecking=accept-new"]
    if node.options.get("known_hosts"):
        ssh += ["-o", f"UserKnownHostsFile={node.options['known_hosts']}"]
    return ssh


def _command(node, runtime) -> list[str]:
    ssh = ssh_command(node)
    if runtime is not None:  # the manager's daemon: through the node's master
        ssh += Masters.of(runtime).options(node, list(ssh), _target(node))
    return ssh


def _destination(node, path: str) -> str:
    host = f"[{node.ip}]" if ":" in node.ip else node.ip  # rsync's HOST:PATH, IPv6 in brackets
    return f"{node.options.get('user', 'root')}@{host}:{node.local_path(path)}"


def _epoch_prefix(runtime) -> str:
    """``CLUSTERKIT_EPOCH=N `` for a node's forced-command epoch check (clusterkit.standby.fence)."""
    seen = epoch.read(runtime.state_dir) if runtime is not None else 0
    return f"{fence.VARIABLE}={seen} " if seen else ""


def _args(node, runtime=None) -> list[str]:
    args = ["-e", shlex.join(_command(node, runtime))]
    prefix = _epoch_prefix(runtime)
    return [*args, f"--rsync-path={prefix}rsync"] if prefix else args


async def _rename(node, src: str, dst: str, runtime=None) -> bool:
    """``mv`` on the node over ssh, only when the source is there and the target is not.

    Raises ConnectionError when the node cannot be reached (the caller stops renaming).
    """
    a, b = shlex.quote(node.local_path(src)), shlex.quote(node.local_path(dst))
    script = (f'{_epoch_prefix(runtime)}[ -e {a} ] && [ ! -e {b} ] && [ -d "$(dirname {b})" ] '
              f'&& mv -T -- {a} {b}')
    proc = await asyncio.create_subprocess_exec(
        *_command(node, runtime), _target(node), script, stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
    try:
        code = await asyncio.wait_for(proc.wait(), 15)
    except asyncio.TimeoutError:
        proc.kill()
        await proc.wait()
        raise ConnectionError(f"ssh to {node.name} timed out") from None
    if code == 255:
        raise ConnectionError(f"ssh to {node.name} failed")
    return code == 0


def _setup(node, cluster) -> str:
    user, key = node.options.get("user", "root"), _key(node)
    port = int(node.options.get("port", 22))
    return (f"To let the manager replicate to {node.name} over ssh, authorise its key there:\n"
            f"  on the manager (once):  test -f {key} || ssh-keygen -t ed25519 -N '' -f {key}\n"
            f"  then:                   ssh-copy-id -i {key}.pub -p {port} {user}@{node.ip}\n"
            f"  (or append {key}.pub to ~{user}/.ssh/authorized_keys on {node.name}; "
            f"the node needs rsync installed)")


def _lab_options(manager, name: str) -> dict:
    return {"key": lab_path(manager, "id_ed25519"), "known_hosts": lab_path(manager, "known_hosts")}


KIND = TransportKind("ssh", _destination, _args, setup=_setup, rename=_rename,
                     lab_options=_lab_options,
                     description="rsync over ssh with the manager's key, one connection per node")
