"""Panel sync: the panel's data and operator-declared hosting config, replicated to every node.

``[[panelsync]]`` tables name directories (the web server's vhosts, the mail
server's maps...) with a ``post_sync`` command. They become sync sets owned
by ``panelsync`` (the replication plugin ships them like any other), as does
the panel's own data dir (operator accounts, API tokens, the revocation
list). On a node, after a batch of a set lands, its ``post_sync`` runs and
the result is kept in the node's status, where the manager's panel reads it
over mutual TLS. The commands are also the node's named actions (the
manager can run them on demand: ``clusterkit node action NODE NAME``).
"""

from clusterkit import hookimpl

COMPONENT = "panelsync"


@hookimpl
def clusterkit_config_sections(register):
    from clusterkit_panelsync.settings import PANELSYNC, parse_panelsync

    register("panelsync", parse_panelsync, shape=PANELSYNC)


@hookimpl
def clusterkit_sync_sets(cluster):
    from clusterkit_panelsync.settings import sync_sets

    return sync_sets(cluster)


@hookimpl
async def clusterkit_start(runtime):
    from clusterkit_panelsync.runner import PostSync

    if not runtime.is_manager:
        await runtime.start_component(COMPONENT, PostSync(runtime))


@hookimpl
async def clusterkit_stop(runtime):
    await runtime.stop_component(COMPONENT)


@hookimpl
async def clusterkit_applied(runtime, sync_set, paths):
    runner = runtime.components.get(COMPONENT)
    if runner is not None:
        await runner.applied(sync_set, paths)


@hookimpl
def clusterkit_status(runtime):
    return runtime.component_status(COMPONENT)
