"""contrib/bench/axfr_vs_nsd leaves nothing behind: its temporary directory and servers go.

A tiny run (a few hundred records, one round) on a private TMPDIR, then one
that fails at once (no nsd on PATH): both leave TMPDIR empty and no daemon
of theirs running. The TMPDIR is a short directory in /tmp (removed at the
end): under pytest's tmp_path the daemon's control socket path would be too
long for AF_UNIX.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "contrib" / "bench" / "axfr_vs_nsd"


def daemons_under(directory: Path) -> list[int]:
    """Live processes whose command line names ``directory`` (the bench's config is there)."""
    found = []
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                if os.fsencode(str(directory)) in f.read():
                    found.append(int(entry))
        except OSError:
            pass
    return found


@pytest.fixture
def temp():
    directory = Path(tempfile.mkdtemp(prefix="ckb", dir="/tmp"))
    yield directory
    shutil.rmtree(directory)


def run_bench(temp: Path, path: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "TMPDIR": str(temp), "PATH": path}
    return subprocess.run([sys.executable, str(BENCH), "--records", "300", "--rounds", "1"],
                          env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.skipif(not (shutil.which("nsd") and shutil.which("dig")), reason="needs nsd and dig")
def test_a_run_removes_its_directory(temp):
    result = run_bench(temp, os.environ["PATH"])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "AXFR with TSIG of" in result.stdout
    assert os.listdir(temp) == []
    assert daemons_under(temp) == []


def test_a_run_that_fails_at_once_removes_its_directory_and_stops_clusterkit(temp, tmp_path):
    result = run_bench(temp, str(tmp_path))  # no nsd: it fails once clusterkit is started
    assert result.returncode != 0 and "FileNotFoundError" in result.stderr, result.stderr
    assert os.listdir(temp) == []
    assert daemons_under(temp) == []
