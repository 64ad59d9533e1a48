"""Mail services: SMTP, submission, SMTPS, POP3(S), IMAP(S) as plain L4 relays.

These servers speak first (the banner reaches the client before it sends a
byte); the proxy relays both directions independently, so nothing here needs
a protocol handler. STARTTLS and implicit TLS are end-to-end between the
client and the node: the manager never sees a certificate.

Default health checks are TCP connects until the protocol checks
(``smtp``/``pop3``/``imap`` from the checks plugin) are available on every
installation; a policy picks them with ``check = {kind = "smtp"}``.
"""

from clusterkit import hookimpl
from clusterkit.registry import ServiceKind

#: name, default port, default check kind, description
MAIL_SERVICES = (
    ("smtp", 25, "tcp", "SMTP (MTA to MTA); STARTTLS passes through"),
    ("submission", 587, "tcp", "mail submission; STARTTLS passes through"),
    ("smtps", 465, "tcp", "SMTP over implicit TLS, passed through untouched"),
    ("pop3", 110, "tcp", "POP3; STLS passes through"),
    ("pop3s", 995, "tcp", "POP3 over implicit TLS, passed through untouched"),
    ("imap", 143, "tcp", "IMAP; STARTTLS passes through"),
    ("imaps", 993, "tcp", "IMAP over implicit TLS, passed through untouched"),
)


@hookimpl
def clusterkit_register_services(register):
    for name, port, check, description in MAIL_SERVICES:
        register(ServiceKind(name, (port,), check=check, description=description))
