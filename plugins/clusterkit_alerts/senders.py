"""Where a grouped alert message goes: a webhook (JSON, HMAC-signed) and e-mail through a relay.

A sender raises on failure; the caller keeps the message and retries it.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import smtplib
import time
from email.message import EmailMessage

import aiohttp

SIGNATURE = "X-Clusterkit-Signature"
TIMESTAMP = "X-Clusterkit-Timestamp"


class DeliveryError(Exception):
    """The message was not accepted; the text says by whom and why."""


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """``sha256=<hex>`` of ``timestamp + "." + body``: the receiver recomputes it (and checks the age)."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


async def send_webhook(webhook, message: dict) -> None:
    body = json.dumps(message, sort_keys=True).encode()
    timestamp = str(int(time.time()))
    headers = {"Content-Type": "application/json", "User-Agent": "clusterkit-alerts", TIMESTAMP: timestamp}
    if webhook.secret:
        headers[SIGNATURE] = sign(webhook.secret, timestamp, body)
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=webhook.timeout)) as session:
            async with session.post(webhook.url, data=body, headers=headers, allow_redirects=False) as resp:
                if not 200 <= resp.status < 300:
                    raise DeliveryError(f"webhook {webhook.url}: HTTP {resp.status}")
    except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
        raise DeliveryError(f"webhook {webhook.url}: {type(exc).__name__}: {exc}") from None


def subject(message: dict) -> str:
    alerts = message["alerts"]
    firing = [a for a in alerts if a["state"] == "firing"]
    first = (firing or alerts)[0]
    more = f" (+{len(alerts) - 1} more)" if len(alerts) > 1 else ""
    word = "ALERT" if firing else "resolved"
    one_line = " ".join(first["text"].split())  # a header holds no line breaks (check output may)
    return f"[clusterkit {message['cluster']}] {word}: {one_line[:120]}{more}"


def text_of(message: dict) -> str:
    lines = [f"cluster {message['cluster']}, manager {message['host']}:", ""]
    for a in message["alerts"]:
        when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(a["at"]))
        lines.append(f"{when}  {a['state'].upper():8}  {a['text']}")
    return "\n".join(lines) + "\n"


async def send_email(email, message: dict) -> None:
    mail = EmailMessage()
    mail["From"] = email.sender
    mail["To"] = ", ".join(email.to)
    mail["Subject"] = subject(message)
    mail.set_content(text_of(message))

    def deliver() -> None:
        with smtplib.SMTP(email.host, email.port, timeout=email.timeout) as smtp:
            if email.starttls:
                smtp.starttls()
            if email.user:
                smtp.login(email.user, email.password)
            smtp.send_message(mail)

    try:
        await asyncio.to_thread(deliver)
    except (smtplib.SMTPException, OSError) as exc:
        raise DeliveryError(f"e-mail via {email.host}:{email.port}: {type(exc).__name__}: {exc}") from None


async def send(settings, sender: str, message: dict) -> None:
    if sender == "webhook" and settings.webhook is not None:
        await send_webhook(settings.webhook, message)
    elif sender == "email" and settings.email is not None:
        await send_email(settings.email, message)
    else:
        raise DeliveryError(f"{sender}: not configured any more")
