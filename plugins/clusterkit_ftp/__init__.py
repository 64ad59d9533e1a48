"""FTP balancing: the control channel is parsed so data connections reach the same node.

A plain L4 relay breaks FTP (the node's PASV reply names its own address, and
the data connection must go where the control connection went). The ``ftp``
service kind registers :class:`~clusterkit_ftp.handler.FtpHandler` as the
proxy's protocol handler; see docs/mail-and-ftp.md.
"""

from clusterkit import hookimpl
from clusterkit.registry import ServiceKind


@hookimpl
def clusterkit_register_services(register):
    from clusterkit_ftp.handler import FtpHandler
    from clusterkit_ftp.options import check_options

    register(ServiceKind(
        "ftp", (21,), check="ftp", handler=FtpHandler, persistence=300,
        check_options=check_options,
        description="FTP: PASV/EPSV/PORT/EPRT rewritten, data pinned to the control's node"))


@hookimpl
def clusterkit_status(runtime):
    """Per ftp policy: FTPS clients pinned, ports of the FTPS range listened on, their pipes."""
    from clusterkit_ftp.handler import PortRangePins

    report = {}
    for policy in runtime.cluster.policies if runtime.is_manager else ():
        if policy.service == "ftp":
            pins = PortRangePins.existing(policy.key)
            report[policy.key] = pins.stats() if pins is not None else \
                {"clients": 0, "listening_ports": 0, "data_connections": 0}
    return {"ftps": report} if report else None
