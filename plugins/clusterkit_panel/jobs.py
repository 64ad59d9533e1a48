"""Remote actions: the manager's durable per-node queue, and a node running one action.

On the manager a job is a row of ``panel.sqlite`` (it survives restarts).
One worker per node takes that node's oldest unfinished job, asks the node
over mutual TLS to run it and records the answer; while the node is down
the job stays queued and the worker waits (backing off up to ``retry_max``,
woken at once when the node says hello or the poller sees it again), so a
node's jobs run strictly in the order they were queued. The node keeps each
job's result by job key: a retry after a lost answer returns the first
result instead of running the command twice.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import ssl

import aiohttp

log = logging.getLogger("clusterkit.panel.jobs")

OUTPUT_LIMIT = 64 * 1024


class Jobs:
    def __init__(self, panel):
        self.panel = panel
        self.store = panel.store
        self.events: dict[str, asyncio.Event] = {}
        self.tasks: dict[str, asyncio.Task] = {}

    def submit(self, node: str, action: str, requested_by: str = "") -> int:
        job = self.store.add_job(node, action, requested_by)
        log.info("queued job %d: %s on %s (by %s)", job, action, node, requested_by or "?")
        self.sync_workers()
        self.wake(node)
        return job

    def wake(self, node: str) -> None:
        event = self.events.get(node)
        if event is not None:
            event.set()

    def sync_workers(self) -> None:
        """One worker per node of the current definition (plus nodes that still have jobs)."""
        if not self.panel.https_ready.is_set():
            return
        wanted = {h.name for h in self.panel.runtime.cluster.nodes}
        for name in wanted:
            if name not in self.tasks or self.tasks[name].done():
                self.events[name] = asyncio.Event()
                self.tasks[name] = self.panel.spawn(self._worker(name), f"jobs-{name}")
        for name in set(self.tasks) - wanted:
            self.tasks.pop(name).cancel()
            self.events.pop(name, None)
        for name in set(self.store.nodes_with_jobs()) - wanted:
            self.store.fail_jobs(name, f"{name} is no longer a node of the cluster")

    def stop(self) -> None:
        for task in self.tasks.values():
            task.cancel()
        self.tasks.clear()

    async def _wait(self, node: str, timeout: float) -> None:
        event = self.events[node]
        try:
            await asyncio.wait_for(event.wait(), timeout)
        except asyncio.TimeoutError:
            pass
        event.clear()

    async def _worker(self, node: str) -> None:
        delay = 0.5
        while True:
            job = self.store.next_job(node)
            if job is None:
                await self._wait(node, 60.0)
                continue
            self.store.job_started(job["id"])
            key = f"{job['created']:.6f}-{job['id']}"
            timeout = self.panel.settings.action_timeout + 5.0
            try:
                status, answer = await self.panel.call(node, "POST", f"/control/v1/actions/{job['action']}",
                                                       {"job": key}, timeout=timeout)
            except (OSError, aiohttp.ClientError, asyncio.TimeoutError, ssl.SSLError) as exc:
                reason = f"{node} unreachable: {exc or type(exc).__name__}"
                self.store.job_retry(job["id"], reason)
                log.debug("job %d waits: %s", job["id"], reason)
                await self._wait(node, delay)
                delay = min(self.panel.settings.retry_max, delay * 2)
                continue
            delay = 0.5
            if status == 200:
                code = answer.get("exit_code")
                self.store.job_finished(job["id"], "done" if code == 0 else "failed", code,
                                        answer.get("output", ""), answer.get("error", ""))
                log.info("job %d (%s on %s) exit %s", job["id"], job["action"], node, code)
            else:
                self.store.job_finished(job["id"], "failed", None, "",
                                        answer.get("error", f"HTTP {status}"))
                log.warning("job %d (%s on %s) refused: %s", job["id"], job["action"], node,
                            answer.get("error"))


async def run_action(panel, name: str, command: str, key: str) -> dict:
    """On a node: run ``command`` once per job key; a repeated key returns the stored result."""
    store = panel.store
    if key:
        done = store.action_result(key)
        if done is not None:
            return {"action": name, "exit_code": done["exit_code"], "output": done["output"],
                    "repeated": True}
    async with panel.action_lock:  # one action at a time on a host, like the manager's per-node order
        env = {**os.environ, "CLUSTERKIT_HOST": panel.name, "CLUSTERKIT_ACTION": name,
               "CLUSTERKIT_ROOT": panel.runtime.host.root}
        proc = await asyncio.create_subprocess_shell(
            command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            stdin=asyncio.subprocess.DEVNULL, env=env, start_new_session=True)
        try:
            out, _ = await asyncio.wait_for(proc.communicate(), panel.settings.action_timeout)
            code, output = proc.returncode, out.decode(errors="replace")[-OUTPUT_LIMIT:]
        except asyncio.TimeoutError:
            os.killpg(proc.pid, signal.SIGKILL)  # the shell and what it started
            await proc.wait()
            code, output = -1, f"timed out after {panel.settings.action_timeout}s"
    if key:
        store.add_action_result(key, name, code, output)
    log.info("action %s on %s: exit %s", name, panel.name, code)
    return {"action": name, "exit_code": code, "output": output, "repeated": False}
