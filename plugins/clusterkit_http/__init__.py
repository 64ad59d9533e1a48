"""HTTP and HTTPS: plain L4 relays (TLS passes through to the node untouched)."""

from clusterkit import hookimpl
from clusterkit.registry import ServiceKind


@hookimpl
def clusterkit_register_services(register):
    register(ServiceKind("http", (80,), check="tcp", description="HTTP, relayed at L4"))
    register(ServiceKind("https", (443,), check="tcp", persistence=300,
                         description="HTTPS, TLS passed through; clients stick to a node"))
