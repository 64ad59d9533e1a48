"""The plugin contract: every hook clusterkit calls, in one place.

Plugins implement these with ``@clusterkit.hookimpl``. Built-in plugins live in
``plugins/`` and register through the ``clusterkit`` entry-point group exactly
like third-party plugins. Every hook here has an entry in ``docs/hooks.md``
(a test checks it).

Hooks that bring servers up or down (``clusterkit_start``, ``clusterkit_stop``,
``clusterkit_reload``) and events (``clusterkit_applied``,
``clusterkit_membership_changed``) may return an awaitable; the runtime calls
them plugin by plugin and awaits every awaitable result in order
(:func:`clusterkit.hookcalls.call_each`). What plugins hand each other through
hooks is typed in :mod:`clusterkit.contracts`.
"""

import pluggy

hookspec = pluggy.HookspecMarker("clusterkit")
hookimpl = pluggy.HookimplMarker("clusterkit")


# ---------------------------------------------------------------- registries


@hookspec
def clusterkit_register_services(register):
    """Register service kinds (http, smtp, ftp, ...).

    Called once when the plugin manager's registry is first built.
    ``register(kind)`` takes a :class:`clusterkit.registry.ServiceKind`: its
    name, default ports, the proxy protocol handler (``None`` for a plain
    byte relay), the default health check kind and default persistence.
    Registering a name twice is an error naming both plugins.
    """


@hookspec
def clusterkit_register_health_checks(register):
    """Register health check kinds (tcp, http, smtp, dns, command, ...).

    ``register(kind)`` takes a :class:`clusterkit.registry.CheckKind` whose
    ``run`` coroutine is awaited as ``run(target)`` with a
    :class:`clusterkit.registry.CheckTarget` and must return a short text on
    success or raise :class:`clusterkit.registry.CheckFailed` with the reason.
    Registering a name twice is an error naming both plugins.
    """


@hookspec
def clusterkit_register_transports(register):
    """Register transports: how replicated files reach a node (local, ssh, rsyncd).

    ``register(kind)`` takes a :class:`clusterkit.registry.TransportKind`
    whose ``destination(node, path)`` returns the rsync destination for a
    path on that node and whose ``rsync_args(node)`` returns extra rsync
    arguments (``-e ssh ...``, ``--password-file``...). Registering a name
    twice is an error naming both plugins.
    """


@hookspec
def clusterkit_register_commands(app):
    """Add CLI commands: ``app`` is the root :class:`typer.Typer`.

    Call ``app.add_typer(sub, name="noun")`` or ``app.command()(fn)``.
    Called once, before the command line is parsed.
    """


@hookspec
def clusterkit_config_sections(register):
    """Claim a top-level table of the cluster definition (``[dns]``, ...).

    ``register(name, parse)``: ``parse(table, report)`` receives the raw TOML
    table and returns the parsed value, stored as ``cluster.sections[name]``;
    it calls ``report(key, message)`` for every problem (the key relative to
    the table). Tables no plugin claims are refused as unknown; a table
    claimed twice is an error naming both plugins.
    """


# -------------------------------------------------------------- configuration


@hookspec
def clusterkit_sync_sets(cluster):
    """Return a list of :class:`clusterkit.config.SyncSet` a plugin wants replicated.

    Called when the cluster definition is loaded; ``cluster`` is the parsed
    :class:`clusterkit.config.Cluster`. The DNS plugin returns its zones
    directory here. Return ``None`` or ``[]`` for nothing.
    """


# ------------------------------------------------------------------ lifecycle


@hookspec
def clusterkit_init(cluster):
    """``clusterkit init`` wrote a new definition: prepare what a new cluster needs.

    ``cluster`` is the parsed new definition. The panel plugin creates the
    cluster CA here. Called once per ``init``; an exception makes ``init``
    fail with exit 1 (the definition file stays written).
    """


@hookspec
def clusterkit_start(runtime):
    """Bring this plugin's servers up on this host.

    ``runtime`` is the :class:`clusterkit.runtime.Runtime`: ``runtime.cluster``,
    ``runtime.host`` (this host's definition and role), ``runtime.local_path()``,
    ``runtime.spawn()`` for background tasks. A plugin whose work is one
    per-host object (a :class:`clusterkit.contracts.Component`) starts it with
    ``await runtime.start_component(name, component)``; its reload, stop and
    status hooks are then one line each (``reload_component``,
    ``stop_component``, ``component_status``). May return an awaitable.
    A plugin that raises stops the daemon with the error, naming the plugin.
    """


@hookspec
def clusterkit_reload(runtime, old, new):
    """The cluster definition changed from ``old`` to ``new`` (both valid).

    Apply the difference without dropping established connections.
    ``runtime.cluster`` is already ``new``. May return an awaitable.
    """


@hookspec
def clusterkit_stop(runtime):
    """Stop this plugin's servers gracefully (stop accepting, let work finish).

    Called in reverse start order; may return an awaitable, which the
    runtime bounds with its shutdown timeout.
    """


@hookspec
def clusterkit_status(runtime):
    """Return a dict for ``clusterkit status`` (``{"section": {...}}``) or ``None``.

    Values must be JSON-serialisable; they are merged into the status report.
    """


# --------------------------------------------------------------------- events


@hookspec
def clusterkit_membership_changed(runtime, policy, node, service, old, new, reason):
    """A member's health or operator state changed.

    ``policy`` is the policy key (``"vip:port"``) the member belongs to, so two
    policies of one service can be told apart; ``old``/``new`` are state names
    (:data:`clusterkit.contracts.MEMBER_STATES`); ``reason`` is the check
    output or the operator's action. May return an awaitable. To ask for the
    states at any time, use :class:`clusterkit.contracts.MembershipQuery`.
    A plugin that raises is logged by name; every other plugin still gets the event.
    """


@hookspec
def clusterkit_applied(runtime, sync_set, paths):
    """On a node: a replicated batch of ``sync_set`` landed in this host's copy.

    ``paths`` are the changed local paths (empty when unknown: a full sync).
    The DNS plugin reloads zones here; panel sync runs post-sync actions.
    May return an awaitable. A plugin that raises is logged by name; every
    other plugin still gets the event.
    """


# ----------------------------------------------------------------- decisions


@hookspec(firstresult=True)
def clusterkit_lb_engine(runtime):
    """Return the load-balancing engine object for this manager, or ``None``.

    The first non-None result wins: return ``None`` so other plugins can be
    tried. The native proxy ships as ``trylast``; a plugin offering HAProxy
    or IPVS returns its engine here: a :class:`clusterkit.contracts.LbEngine`
    (``apply(cluster)``, ``set_member_state(...)``, ``stats()``, ``close(timeout)``).
    """
