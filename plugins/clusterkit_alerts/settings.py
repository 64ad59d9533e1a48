"""The ``[alerts]`` table: thresholds, grouping, and where alerts go (webhook, e-mail)."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from clusterkit.definition.values import read_number

KEYS = ("group_wait", "interval", "lag", "stalled", "retry_max", "startup_grace", "dns_converge",
        "cert_days", "webhook", "email")
WEBHOOK_KEYS = ("url", "secret", "timeout")
EMAIL_KEYS = ("relay", "from", "to", "starttls", "user", "password", "timeout")


@dataclass(frozen=True)
class Webhook:
    url: str
    secret: str = ""       # HMAC-SHA256 key: the receiver checks X-Clusterkit-Signature
    timeout: float = 10.0


@dataclass(frozen=True)
class Email:
    host: str
    port: int
    sender: str
    to: tuple[str, ...]
    starttls: bool = False
    user: str = ""
    password: str = ""
    timeout: float = 10.0


@dataclass(frozen=True)
class AlertSettings:
    group_wait: float = 10.0  # a burst of alerts within this many seconds is one message
    interval: float = 2.0     # how often the cluster's state is checked for alert conditions
    lag: float = 60.0         # replication lagging this many seconds behind is an alert
    stalled: float = 30.0     # replication to a node failing this long is an alert
    retry_max: float = 300.0  # a failed delivery is retried, backing off up to this
    startup_grace: float = 30.0  # after a start nothing is resolved this long (checks re-run first)
    dns_converge: float = 120.0  # a host's DNS not serving the manager's zones this long is an alert
    cert_days: float = 14.0   # a host certificate expiring within this many days is an alert
    webhook: Webhook | None = None
    email: Email | None = None

    @property
    def senders(self) -> list[str]:
        return [name for name in ("webhook", "email") if getattr(self, name) is not None]


def parse_alerts(value, report) -> AlertSettings | None:
    """``parse(table, report)`` for the ``[alerts]`` section; None without one (or an empty one)."""
    if value == {}:
        return None
    if not isinstance(value, dict):
        report("", "must be a table: [alerts]")
        return AlertSettings()
    _unknown(value, KEYS, "", report)
    numbers = {}
    for key, low, high in (("group_wait", 0, 3600), ("interval", 0.2, 3600), ("lag", 1, 86400 * 7),
                           ("stalled", 1, 86400 * 7), ("retry_max", 1, 86400), ("startup_grace", 0, 3600),
                           ("dns_converge", 1, 86400 * 7), ("cert_days", 1, 3650)):
        number = read_number(value, key, float, None, low, high, report)
        if number is not None:
            numbers[key] = number
    return AlertSettings(**numbers, webhook=_webhook(value.get("webhook"), report),
                         email=_email(value.get("email"), report))


def _unknown(table: dict, known: tuple[str, ...], prefix: str, report) -> None:
    for key in sorted(set(table) - set(known)):
        report(prefix + key, f"unknown key (known: {', '.join(known)})")


def _text(table: dict, key: str, prefix: str, report, required: bool = False) -> str:
    value = table.get(key, "")
    if not isinstance(value, str) or any(ord(c) < 32 or ord(c) == 127 for c in value) \
            or len(value) > 2048:
        report(prefix + key, "must be a string of printable characters (at most 2048)")
        return ""
    if required and not value:
        report(prefix + key, "is required")
    return value


def _webhook(table, report) -> Webhook | None:
    if table is None:
        return None
    if not isinstance(table, dict):
        report("webhook", "must be a table: webhook = { url = \"https://...\", secret = \"...\" }")
        return None
    _unknown(table, WEBHOOK_KEYS, "webhook.", report)
    url = _text(table, "url", "webhook.", report, required=True)
    parts = urlsplit(url)
    if url and (parts.scheme not in ("http", "https") or not parts.hostname):
        report("webhook.url", f"{url!r} is not an http:// or https:// URL")
        return None
    timeout = read_number(table, "timeout", float, 10.0, 0.1, 300, report, "webhook.timeout")
    return Webhook(url, _text(table, "secret", "webhook.", report), timeout) if url else None


def _email(table, report) -> Email | None:
    if table is None:
        return None
    if not isinstance(table, dict):
        report("email", "must be a table: email = { relay = \"host:25\", from = \"...\", to = [...] }")
        return None
    _unknown(table, EMAIL_KEYS, "email.", report)
    relay = _text(table, "relay", "email.", report, required=True)
    host, _, port = relay.rpartition(":") if relay.count(":") == 1 or relay.startswith("[") else (relay, "", "")
    host = host.strip("[]") or relay
    try:
        port_number = int(port) if port else 25
        if not 1 <= port_number <= 65535:
            raise ValueError
    except ValueError:
        report("email.relay", f"{relay!r}: the port must be 1..65535")
        port_number = 25
    sender = _text(table, "from", "email.", report, required=True)
    to = table.get("to")
    if not isinstance(to, list) or not to or not all(isinstance(a, str) and "@" in a for a in to):
        report("email.to", "must be a non-empty list of addresses")
        to = []
    starttls = table.get("starttls", False)
    if not isinstance(starttls, bool):
        report("email.starttls", "must be true or false")
        starttls = False
    timeout = read_number(table, "timeout", float, 10.0, 0.1, 300, report, "email.timeout")
    if not (relay and sender and to):
        return None
    return Email(host, port_number, sender, tuple(to), starttls, _text(table, "user", "email.", report),
                 _text(table, "password", "email.", report), timeout)


def settings_of(cluster) -> AlertSettings | None:
    """The cluster's alert settings, or None when it has no ``[alerts]`` table."""
    return cluster.sections.get("alerts")
