"""On a node: run a set's post-sync command after a batch lands, and remember the result.

Results are kept in ``state_dir/panelsync.json`` (0600) so the manager still
sees the last run of every set after the node restarts. Runs of one host
are serial; a batch that lands while its set's command runs causes one more
run afterwards (batches coalesce, none is missed).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import time

from clusterkit.contracts import Component
from clusterkit_panelsync.settings import entries

log = logging.getLogger("clusterkit.panelsync")

OUTPUT_LIMIT = 16 * 1024
RESULTS = "panelsync.json"


class PostSync(Component):
    """The node's post-sync runner: nothing to start or stop, its results outlive it on disk."""

    def __init__(self, runtime):
        self.runtime = runtime
        self.path = os.path.join(runtime.state_dir, RESULTS)
        self.results: dict[str, dict] = self._load()
        self.lock = asyncio.Lock()
        self.pending: dict[str, set] = {}

    def _load(self) -> dict:
        try:
            with open(self.path) as f:
                return json.load(f).get("results", {})
        except (FileNotFoundError, ValueError):
            return {}

    def _save(self) -> None:
        tmp = f"{self.path}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump({"results": self.results}, f)
        os.replace(tmp, self.path)

    async def applied(self, sync_set, paths) -> None:
        name = getattr(sync_set, "name", sync_set)
        entry = next((e for e in entries(self.runtime.cluster) if e.name == name), None)
        if entry is None or not entry.post_sync:
            return
        first = name not in self.pending
        self.pending.setdefault(name, set()).update(paths or ())
        if not first:
            return  # a run is queued already; it will cover these paths too
        async with self.lock:
            changed = sorted(self.pending.pop(name, set()))
            await self._run(entry, changed)

    async def _run(self, entry, changed: list[str]) -> None:
        # the same environment as a sync set's on_change (clusterkit.sync), plus the host
        local = self.runtime.local_path(entry.path)
        env = {**os.environ, "CLUSTERKIT_HOST": self.runtime.host.name, "CLUSTERKIT_SYNC_SET": entry.name,
               "CLUSTERKIT_SYNC_PATHS": "\n".join(changed)[:100_000]}
        started = time.time()
        proc = await asyncio.create_subprocess_shell(
            entry.post_sync, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            stdin=asyncio.subprocess.DEVNULL, env=env, start_new_session=True,
            cwd=local if os.path.isdir(local) else None)
        try:
            out, _ = await asyncio.wait_for(proc.communicate(), entry.timeout)
            code, output = proc.returncode, out.decode(errors="replace")[-OUTPUT_LIMIT:]
        except asyncio.TimeoutError:
            os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
            code, output = -1, f"timed out after {entry.timeout}s"
        runs = self.results.get(entry.name, {}).get("runs", 0) + 1
        self.results[entry.name] = {"command": entry.post_sync, "exit_code": code, "output": output,
                                    "ok": code == 0, "started": started, "finished": time.time(),
                                    "changed": len(changed), "runs": runs}
        self._save()
        (log.info if code == 0 else log.warning)("post-sync of %s on %s: exit %s", entry.name,
                                                 self.runtime.host.name, code)

    def status(self) -> dict:
        return {"results": self.results}
