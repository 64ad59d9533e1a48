"""The manager's alerter: conditions → firing/resolved alerts → grouped messages → senders.

Every ``interval`` (and at once on a membership change) the manager's status
report is read for alert conditions (:mod:`clusterkit_alerts.rules`). A new
condition fires, a vanished one resolves; alerts about a node in maintenance
are silenced; for ``startup_grace`` after a start nothing is resolved (the
health checks begin again from "up"). Alerts wait ``group_wait`` seconds after the first of a burst,
then go as one message to every configured sender and to the
``clusterkit_alert`` hook; a failed delivery is retried with back-off. All of
it is kept in SQLite, so a restart neither loses nor repeats a message.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time

from clusterkit.hookcalls import call_each
from clusterkit_alerts import rules, senders
from clusterkit_alerts.store import AlertStore

log = logging.getLogger("clusterkit.alerts")

EVENTS = {"action-failed"}  # fire once, never "resolved"


class Alerter:
    def __init__(self, runtime, settings):
        self.runtime = runtime
        self.settings = settings
        self.store = AlertStore(os.path.join(runtime.state_dir, "alerts.sqlite"))
        self.wake = asyncio.Event()
        self.started = time.time()
        self.sent = 0
        self.errors = 0
        self.view: dict = {}  # what status() shows, refreshed by the loops (status may come from any thread)
        self._refresh()

    async def start(self) -> None:
        self.runtime.spawn(self._evaluate_loop(), "alerts-evaluate")
        self.runtime.spawn(self._deliver_loop(), "alerts-deliver")

    async def stop(self) -> None:
        self.store.close()

    async def reload(self, old, new) -> None:
        from clusterkit_alerts.settings import settings_of

        self.settings = settings_of(new) or self.settings
        self.store.drop_sender(self.settings.senders)
        self.wake.set()

    # ---------------------------------------------------------- conditions

    def evaluate(self) -> None:
        report = self.runtime.status()
        conditions = rules.conditions(report, self.settings, self.started)
        quiet = rules.in_maintenance(report)
        firing = self.store.firing()
        fired = [c for key, c in conditions.items() if key not in firing and c.node not in quiet]
        resolved, silenced = [], []
        for key, (kind, node, _text, _since) in firing.items():
            if node in quiet or (kind in EVENTS and key not in conditions):
                silenced.append(key)
            elif key not in conditions and time.time() >= self.started + self.settings.startup_grace:
                resolved.append(key)  # (a restarted daemon's checks start from "up": wait for them)
        if fired or resolved or silenced:
            self.store.change(fired, resolved, silenced)
            for c in fired:
                log.warning("alert: %s", c.text)
            for key in resolved:
                log.info("alert resolved: %s", firing[key][2])

    async def _evaluate_loop(self) -> None:
        while True:
            try:
                self.evaluate()
                await self._group()
                self._refresh()
            except Exception:  # an alerter that stops is the worst failure: log, keep going
                log.exception("evaluating alert conditions failed")
            try:
                await asyncio.wait_for(self.wake.wait(), self.settings.interval)
            except asyncio.TimeoutError:
                pass
            self.wake.clear()

    async def _group(self) -> None:
        oldest = self.store.oldest_pending()
        if oldest is None or time.time() < oldest + self.settings.group_wait:
            return
        envelope = {"cluster": self.runtime.cluster.name, "host": self.runtime.host.name,
                    "sent_at": round(time.time(), 3)}
        message = self.store.group(self.settings.senders, envelope)
        if message is None:
            return
        for error in await call_each(self.runtime.pm, "clusterkit_alert", keep_going=True,
                                     timeout=30, runtime=self.runtime, message=message):
            log.error("alert hook: %s", error)

    # ------------------------------------------------------------ delivery

    async def _deliver_loop(self) -> None:
        while True:
            for row_id, sender, body, attempts in self.store.due(time.time()):
                message = json.loads(body)
                try:
                    await senders.send(self.settings, sender, message)
                except senders.DeliveryError as exc:
                    self.errors += 1
                    delay = min(self.settings.retry_max, 2.0 ** attempts)
                    self.store.failed(row_id, attempts + 1, time.time() + delay, str(exc))
                    log.warning("alert message not delivered (attempt %d, retry in %.0fs): %s",
                                attempts + 1, delay, exc)
                    continue
                self.store.delivered(row_id)
                self.sent += 1
                log.info("alert message with %d alert(s) sent by %s", len(message["alerts"]), sender)
            self._refresh()
            await asyncio.sleep(0.5)

    def _refresh(self) -> None:
        self.view = {"firing": sorted(text for _kind, _node, text, _since in self.store.firing().values()),
                     **self.store.counts(), "sent": self.sent, "delivery_errors": self.errors,
                     "senders": self.settings.senders}

    def status(self) -> dict:
        return self.view
