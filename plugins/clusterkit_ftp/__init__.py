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

    register(ServiceKind(
        "ftp", (21,), check="tcp", handler=FtpHandler, persistence=300,
        description="FTP: PASV/EPSV/PORT/EPRT rewritten, data pinned to the control's node"))


def _check_options(cluster) -> None:
    from clusterkit.config import ConfigError, Problem
    from clusterkit_ftp.options import ftp_options

    problems = []
    for index, policy in enumerate(cluster.policies):
        if policy.service == "ftp":
            try:
                ftp_options(policy)
            except ValueError as exc:
                problems.append(Problem(f"policy[{index}]", str(exc)))
    if problems:
        raise ConfigError(cluster.path, problems)


@hookimpl
def clusterkit_start(runtime):
    """Refuse to start with a malformed ftp policy option (they are read per connection)."""
    if runtime.is_manager:
        _check_options(runtime.cluster)


@hookimpl
def clusterkit_reload(runtime, old, new):
    """A malformed ftp option after a reload is logged; its connections use the defaults."""
    import logging

    from clusterkit.config import ConfigError

    if runtime.is_manager:
        try:
            _check_options(new)
        except ConfigError as exc:
            logging.getLogger("clusterkit.ftp").error("%s (connections use the defaults)", exc)
