"""A worker process behind ``proxy_workers``: its entry point (``python -m clusterkit.proxy.child``).

Started, fed and restarted by :mod:`clusterkit.proxy.supervisor`.

Reads commands from stdin (``apply``, ``state``, ``close``), runs an engine
whose listeners share their addresses with the parent through
``SO_REUSEPORT``, and writes its counters to stdout every half second. It
exits when told to close or when stdin ends (the parent is gone).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys

from clusterkit.eventloop import new_event_loop
from clusterkit.proxy.engine import Engine
from clusterkit.proxy.supervisor import REPORT_EVERY, frame, read_frame

log = logging.getLogger("clusterkit.proxy")


async def serve() -> None:
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGINT, lambda: None)  # the parent decides when we stop
    loop.add_signal_handler(signal.SIGTERM, lambda: None)
    reader = asyncio.StreamReader(limit=1 << 26)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    out = os.fdopen(sys.stdout.fileno(), "wb", buffering=0)
    engine = Engine(reuse_port=True, processes=int(os.environ.get("CLUSTERKIT_PROXY_PROCESSES", 1)))

    def report() -> None:
        out.write(frame(("stats", engine.stats())))

    async def reporter() -> None:
        while True:
            await asyncio.sleep(REPORT_EVERY)
            report()

    task = asyncio.ensure_future(reporter())
    timeout = 10.0
    try:
        while True:
            try:
                kind, body = await read_frame(reader)
            except asyncio.IncompleteReadError:
                break
            if kind == "apply":
                view, states = body
                engine.states.update(states)
                try:
                    await engine.apply(view)
                except Exception as exc:
                    out.write(frame(("error", str(exc))))
            elif kind == "state":
                engine.set_member_state(*body)
            elif kind == "close":
                timeout = body
                break
    finally:
        task.cancel()
        await engine.close(timeout)


def main() -> None:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format=f"%(asctime)s worker {os.environ.get('CLUSTERKIT_PROXY_WORKER', '?')} "
                               "%(levelname)s %(name)s: %(message)s")
    loop = new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        loop.run_until_complete(serve())
    finally:
        loop.close()


if __name__ == "__main__":
    main()
