"""HTTP and HTTPS: plain L4 relays (TLS passes through to the node untouched).

Neither needs a protocol handler: the proxy relays the bytes. ``https``
defaults to 300 s of persistence so a client keeps the node holding its TLS
session. Their default check is ``tcp`` until the HTTP check kinds of the
health plugin exist.
"""

from clusterkit import hookimpl
from clusterkit.registry import ServiceKind


@hookimpl
def clusterkit_register_services(register):
    register(ServiceKind("http", (80,), check="tcp", description="HTTP, relayed at L4"))
    register(ServiceKind("https", (443,), check="tcp", persistence=300,
                         description="HTTPS, TLS passed through; clients stick to a node"))
