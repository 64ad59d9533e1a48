"""Mail services: SMTP, submission, SMTPS, POP3(S), IMAP(S) as plain L4 relays.

These servers speak first (the banner reaches the client before it sends a
byte); the proxy relays both directions independently, so nothing here needs
a protocol handler. STARTTLS and implicit TLS are end-to-end between the
client and the node: the manager never sees a certificate.

Default health checks are the protocol checks of the checks plugin: the
greeting (and EHLO for SMTP) proves the server accepts clients, where a TCP
connect would pass a server answering ``421``/``-ERR``/``* BYE``. The
implicit-TLS services are checked over TLS (the check knows them by name).
"""

from clusterkit import hookimpl
from clusterkit.registry import ServiceKind

#: name, default port, default check kind, description
MAIL_SERVICES = (
    ("smtp", 25, "smtp", "SMTP (MTA to MTA); STARTTLS passes through"),
    ("submission", 587, "smtp", "mail submission; STARTTLS passes through"),
    ("smtps", 465, "smtp", "SMTP over implicit TLS, passed through untouched"),
    ("pop3", 110, "pop3", "POP3; STLS passes through"),
    ("pop3s", 995, "pop3", "POP3 over implicit TLS, passed through untouched"),
    ("imap", 143, "imap", "IMAP; STARTTLS passes through"),
    ("imaps", 993, "imap", "IMAP over implicit TLS, passed through untouched"),
)


@hookimpl
def clusterkit_register_services(register):
    for name, port, check, description in MAIL_SERVICES:
        register(ServiceKind(name, (port,), check=check, description=description))
