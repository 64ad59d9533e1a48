"""A node that stalls never holds a sync set forever: rsync's I/O timeout, then a wall-clock cap.

The "node" is reached through a remote shell that stops itself (SIGSTOP) the
moment rsync starts it: a peer that no longer reads. Real rsync runs against
it; with a long I/O timeout only the wall-clock cap (``sync_run_limit``) ends
the run, killing rsync's process group, the stopped shell with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import os

from clusterkit.sync import rsync
from sync_support import Daemon, source, sync_cluster
from support import wait_for

STALLING_SHELL = """#!/bin/sh
# an ssh-like command whose peer stops reading: it records its pid, then stops itself
case " $* " in *" -M "*|*" -O "*) exit 255 ;; esac   # no ssh master: connections go direct
echo $$ >> "{pids}"
kill -STOP $$
"""


def stalling_shell(directory, name: str = "stall") -> tuple[str, str]:
    pids = os.path.join(directory, "pids")
    script = os.path.join(directory, name)
    with open(script, "w") as f:
        f.write(STALLING_SHELL.format(pids=pids))
    os.chmod(script, 0o755)
    return script, pids


def alive(pid: int) -> bool:
    """Running or stopped (a zombie is dead: only its exit status is left)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] != "Z"
    except FileNotFoundError:
        return False


def processes_naming(text: str) -> list[int]:
    """Live processes whose command line holds ``text`` (rsync names the job's paths)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    if os.fsencode(text) in f.read() and alive(int(entry)):
                        found.append(int(entry))
            except OSError:
                pass
    return found


def stalled_job(tmp_path, timeout: int, limit: float) -> tuple[rsync.Job, str]:
    script, pids = stalling_shell(str(tmp_path))
    src = tmp_path / "src"
    src.mkdir()
    (src / "file").write_text("data")
    job = rsync.Job(source=str(src), destination=f"node:{tmp_path}/dst", full=True,
                    transport_args=["--rsh", script], timeout=timeout, limit=limit)
    return job, pids


def shell_pids(pids: str) -> list[int]:
    with open(pids) as f:
        return [int(line) for line in f.read().split()]


def test_the_wall_clock_limit_kills_a_stalled_rsync_and_its_stopped_shell(tmp_path):
    job, pids = stalled_job(tmp_path, timeout=3600, limit=1.0)  # rsync's own timeout: an hour
    result = asyncio.run(asyncio.wait_for(rsync.run(job), 60))
    assert (result.code, result.outcome) == (30, "connection"), result
    assert "stopped after 1s, its wall-clock limit (sync_run_limit)" in result.stderr
    (shell,) = shell_pids(pids)
    wait_for(lambda: not alive(shell), timeout=10, what="the stopped shell killed with rsync")
    wait_for(lambda: not processes_naming(str(tmp_path / "src")), timeout=10,
             what="no rsync of the job left")


def test_rsyncs_io_timeout_ends_a_stall_well_before_the_limit(tmp_path):
    job, pids = stalled_job(tmp_path, timeout=1, limit=3600)
    result = asyncio.run(asyncio.wait_for(rsync.run(job), 60))
    assert (result.code, result.outcome) == (30, "connection"), result
    assert "io timeout after 1 seconds" in result.stderr
    (shell,) = shell_pids(pids)
    wait_for(lambda: not alive(shell), timeout=10, what="the stopped shell gone with rsync")


def test_a_cancelled_run_kills_the_process_group(tmp_path):
    job, pids = stalled_job(tmp_path, timeout=3600, limit=3600)

    async def cancel_once_started():
        task = asyncio.ensure_future(rsync.run(job))
        await asyncio.to_thread(wait_for, lambda: os.path.exists(pids) and shell_pids(pids),
                                timeout=10, what="the shell started")
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass

    asyncio.run(cancel_once_started())
    (shell,) = shell_pids(pids)
    wait_for(lambda: not alive(shell), timeout=10, what="the stopped shell killed on cancel")


def test_sync_status_names_the_limit_when_a_node_stalls(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    stalling_shell(str(bin_dir), "ssh")  # the ssh transport runs "ssh" from PATH
    cfg = sync_cluster(tmp_path, nodes=1, prefix="127.84.31",
                       options="options = { sync_timeout = 3600, sync_run_limit = 1 }")
    cfg.write_text(cfg.read_text().replace(
        'transport = "local"', f'transport = "ssh"\noptions = {{ key = "{tmp_path}/id" }}'))
    (source(tmp_path) / "file").write_text("data")
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}"}
    with Daemon(cfg, env=env) as daemon:
        node = wait_for(lambda: (lambda n: n if n["last_error"] else None)(
            daemon.query("sync_status")["nodes"]["node1"]), timeout=30,
            what="the stall reported in sync status")
        assert "rsync exit 30 (connection): rsync stopped after 1s, its wall-clock limit " \
               "(sync_run_limit)" in node["last_error"], node
        assert node["pending"] > 0, "the set's paths wait for the next attempt"
    for shell in shell_pids(str(bin_dir / "pids")):
        wait_for(lambda: not alive(shell), timeout=10, what="every stopped shell killed")
    assert not processes_naming(str(source(tmp_path))), "no rsync of the set left"


def test_a_cancelled_run_with_progress_leaves_nothing_unretrieved(tmp_path, caplog):
    """The reading thread outlives the cancel: its file is closed after it, and what it raised
    is taken (else asyncio logs "Future exception was never retrieved" at collection)."""
    job, pids = stalled_job(tmp_path, timeout=3600, limit=3600)
    job = dataclasses.replace(job, progress=lambda percent: None)

    async def cancel_then_linger():
        task = asyncio.ensure_future(rsync.run(job))
        await asyncio.to_thread(wait_for, lambda: os.path.exists(pids) and shell_pids(pids),
                                timeout=10, what="the shell started")
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        (shell,) = shell_pids(pids)
        await asyncio.to_thread(wait_for, lambda: not alive(shell), timeout=10,
                                what="the stopped shell killed on cancel")
        await asyncio.sleep(0.5)  # the loop lives on, as a daemon's does: the thread settles
        gc.collect()
        await asyncio.sleep(0)

    asyncio.run(cancel_then_linger())
    assert not [r for r in caplog.records if "never retrieved" in r.getMessage()]
