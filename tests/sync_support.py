"""Helpers for the replication tests: a cluster with a sync set, its daemon as a subprocess."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from conftest import write_cluster

CLUSTERKIT = [os.path.join(os.path.dirname(sys.executable), "clusterkit")]
SET_PATH = "/srv/data"


def sync_cluster(tmp_path: Path, nodes: int = 2, exclude: tuple[str, ...] = (),
                 on_change: str = "", prefix: str = "127.84.1", options: str = "") -> Path:
    """A cluster on loopback with local-directory nodes and one sync set ``data`` at /srv/data."""
    extra = f'\n[[sync]]\nname = "data"\npath = "{SET_PATH}"\n'
    if exclude:
        extra += "exclude = [" + ", ".join(json.dumps(e) for e in exclude) + "]\n"
    if on_change:
        extra += f"on_change = {json.dumps(on_change)}\n"
    path = write_cluster(tmp_path / "cluster.toml", prefix, nodes=nodes, extra=extra)
    if options:  # manager options, e.g. sync_full_interval
        text = path.read_text().replace('public_ips = [', f'{options}\npublic_ips = [', 1)
        path.write_text(text)
    source(tmp_path).mkdir(parents=True, exist_ok=True)
    return path


def source(tmp_path: Path) -> Path:
    return tmp_path / "manager" / SET_PATH.lstrip("/")


def target(tmp_path: Path, node: str) -> Path:
    return tmp_path / node / SET_PATH.lstrip("/")


class Daemon:
    """``clusterkit run -c FILE [--as HOST]`` as a subprocess; killed (by pid) at the end."""

    def __init__(self, config: Path, host: str | None = None, env: dict | None = None,
                 wrap: list[str] = ()):
        self.config = config
        self.wrap = list(wrap)  # e.g. ["ip", "netns", "exec", NS] (which execs: same pid)
        self.host = host
        self.env = env
        self.log = config.parent / f"daemon-{host or 'manager'}.log"
        self.proc: subprocess.Popen | None = None

    def start(self, wait: bool = True) -> "Daemon":
        argv = [*self.wrap, *CLUSTERKIT, "run", "-c", str(self.config), "-v"]
        if self.host:
            argv += ["--as", self.host]
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL,
                                     stderr=open(self.log, "a"), env={**os.environ, **(self.env or {})})
        if wait:
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise AssertionError(f"daemon exited {self.proc.returncode}:\n{self.log.read_text()}")
                if self.query("status", check=False) is not None:
                    return self
                time.sleep(0.05)
            raise AssertionError(f"daemon did not come up:\n{self.log.read_text()}")
        return self

    def query(self, cmd: str, check: bool = True, **args):
        from clusterkit.definition.source import daemon_state_dir
        from clusterkit.control import ControlError, request
        try:
            return request(daemon_state_dir(self.config, self.host), cmd, timeout=10, **args)
        except ControlError:
            if check:
                raise
            return None

    def signal(self, sig: int) -> None:
        os.kill(self.proc.pid, sig)

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()

    def __enter__(self) -> "Daemon":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def differences(src: Path, dst: Path, exclude: tuple[str, ...] = (), checksum: bool = True) -> str:
    """``rsync -ain --delete --checksum`` of two trees: empty when identical."""
    argv = ["rsync", "-ain", "--delete", *(["--checksum"] if checksum else []),
            *[f"--exclude={e}" for e in exclude], f"{src}/", f"{dst}/"]
    out = subprocess.run(argv, capture_output=True, text=True)
    if out.returncode not in (0, 23):  # 23: dst missing
        return out.stderr or f"rsync exit {out.returncode}"
    # a directory's mtime alone is not content; a directory kept because it holds
    # excluded files is what excludes are for
    return "\n".join(line for line in (out.stdout + out.stderr).splitlines()
                     if not line.startswith((".d..t......", "cannot delete non-empty directory")))


def wait_identical(src: Path, dsts: list[Path], timeout: float = 30.0,
                   exclude: tuple[str, ...] = ()) -> None:
    """Wait until every ``dst`` equals ``src``; fail with what still differs.

    Polls with rsync's quick check (size and mtime), then confirms by checksum:
    checksumming big trees ten times a second would starve the daemon under test.
    """
    deadline = time.monotonic() + timeout
    while True:
        quick = {str(d): differences(src, d, exclude, checksum=False) for d in dsts}
        diffs = quick if any(quick.values()) else {str(d): differences(src, d, exclude) for d in dsts}
        if not any(diffs.values()):
            return
        if time.monotonic() > deadline:
            shown = {k: v[:2000] for k, v in diffs.items() if v}
            raise AssertionError(f"not identical after {timeout}s: {shown}")
        time.sleep(0.1)


def write_tree(root: Path, files: int, dirs: int = 1, prefix: str = "f", size: int = 64) -> None:
    """``files`` files spread over ``dirs`` directories under ``root``."""
    per = max(1, files // dirs)
    payload = os.urandom(size)
    for i in range(files):
        d = root / f"d{i // per:03d}"
        if i % per == 0:
            d.mkdir(parents=True, exist_ok=True)
        (d / f"{prefix}{i:06d}").write_bytes(payload + str(i).encode())


def wait_settled(daemon: Daemon, timeout: float = 30.0) -> dict:
    """Wait until no node has anything pending (files may land before the worker notes it)."""
    deadline = time.monotonic() + timeout
    while True:
        status = daemon.query("sync_status")
        if all(n["pending"] == 0 and n["state"] == "idle" for n in status["nodes"].values()):
            return status
        if time.monotonic() > deadline:
            raise AssertionError(f"still pending after {timeout}s: {status['nodes']}")
        time.sleep(0.05)
