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
    path on that node and whose ``rsync_args(node, runtime=None)`` returns extra
    rsync arguments (``-e ssh ...``, ``--password-file``...); ``runtime`` is the
    manager daemon's, ``None`` outside a daemon. Registering a name
    twice is an error naming both plugins.
    """


@hookspec
def clusterkit_register_engines(register):
    """Register load-balancing engines (the native proxy, HAProxy, IPVS...).

    ``register(kind)`` takes a :class:`clusterkit.registry.EngineKind`: its
    ``create(runtime)`` returns a :class:`clusterkit.contracts.LbEngine` that
    is handed the policies naming it (``[[policy]] engine``, else ``[manager]
    engine``, else ``"native"``), and it declares what it can carry, so the
    definition refuses a policy an engine cannot realise, naming the engines
    that can. Registering a name twice is an error naming both plugins.
    """


@hookspec
def clusterkit_register_commands(app, groups):
    """Add CLI commands: ``app`` is the root :class:`typer.Typer`.

    Call ``app.add_typer(sub, name="noun")`` or ``app.command()(fn)``. To add a
    command to a noun of the core or of another plugin (``clusterkit node
    token``), call ``groups.group("node").command("token")(fn)``
    (:class:`clusterkit.cli.CommandGroups`). Called once per CLI build, before
    the command line is parsed.
    """


@hookspec
def clusterkit_config_sections(register):
    """Claim a top-level table of the cluster definition (``[dns]``, ``[[panelsync]]``...).

    ``register(name, parse, shape=None)``. With ``shape`` (a
    :class:`clusterkit.definition.tables.Table` of declared keys, or
    :class:`~clusterkit.definition.tables.Tables` for ``[[name]]``) the core
    reads the section first: types, ranges, choices, required keys and
    unknown keys are reported with their lines, and ``parse(values, report)``
    receives the valid values (defaults filled in) to build its settings.
    Without ``shape`` it receives the raw TOML table. The result is stored as
    ``cluster.sections[name]``; ``report(key, message)`` adds a problem (the
    key relative to the table). Tables no plugin claims are refused as unknown; a table
    claimed twice is an error naming both plugins.
    """


@hookspec
def clusterkit_host_options(register):
    """Declare the keys this plugin reads from hosts' ``options`` tables.

    ``register(name, key, roles=("manager", "node"), initial=UNSET)``:
    ``key`` is a :class:`clusterkit.definition.tables.Key` (type, range,
    choices, ``check``); the definition checks the option with it on hosts of
    those roles, reporting ``FILE:LINE: manager.options.NAME: what``.
    ``initial`` is what ``clusterkit init`` writes into a new manager's
    options (the native proxy: ``proxy_workers = "auto"``). An engine plugin
    declares its options here; other keys of ``options`` stay free-form
    (transport settings). Declaring a name twice is an error.
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


@hookspec
def clusterkit_status_summary(report, summary):
    """Add this plugin's part to ``clusterkit status``'s compact view.

    Runs in the CLI, on the daemon's ``report`` (the merged
    :func:`clusterkit_status` sections). Read your own section and call
    ``summary.problem(text)`` for what needs an operator,
    ``summary.node(name, column=value, ...)`` and
    ``summary.policy("vip:port", column=value, ...)`` for table cells, and
    ``summary.line(text)`` for one-line facts (see
    :class:`clusterkit.cli.summary.Summary`). ``summary.age(epoch)`` writes a
    time as "12s ago".
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
def clusterkit_alert(runtime, message):
    """A grouped alert message is ready (manager only, with ``[alerts]`` configured).

    ``message`` is ``{"cluster", "host", "sent_at", "alerts": [{"state":
    "firing"|"resolved", "key", "kind", "node", "text", "at"}]}``, the same
    JSON the webhook receives. Deliver it somewhere (a chat, a pager). Called
    once per message; a failure is logged with the plugin's name, not
    retried (the built-in webhook and e-mail senders retry on their own).
    May return an awaitable.
    """


@hookspec
def clusterkit_applied(runtime, sync_set, paths):
    """On a node: a replicated batch of ``sync_set`` landed in this host's copy.

    ``paths`` are the changed local paths (empty when unknown: a full sync).
    The DNS plugin reloads zones here; panel sync runs post-sync actions.
    May return an awaitable. A plugin that raises is logged by name; every
    other plugin still gets the event.
    """


@hookspec
def clusterkit_outranked(runtime, reason):
    """This host acts as the manager, but a newer one exists (a higher epoch).

    Announced by whoever learns it (the replicator, from a receiver refusing
    this manager's epoch); ``reason`` says how it was learnt. The standby
    plugin stops acting: it gives the addresses up, or demotes. May return an
    awaitable.
    """




# ---------------------------------------------------------------------- panel


@hookspec
def clusterkit_panel_routes():
    """Return a list of :class:`clusterkit_panel.routes.Route`: API endpoints for the panel.

    Called by the panel plugin when it builds its HTTPS app on a host (so only
    where the panel is installed). Each route names its method, path, handler
    ``async def handler(panel, request)``, who may call it (``public``,
    ``operator``, ``host``, ``metrics``), where it is served (``any``,
    ``manager``, ``node``), whether it ``changes`` the cluster, and a summary
    and body schema for the OpenAPI document. The panel checks access first; a
    handler answers with ``clusterkit_panel.routes.answer(data, status)`` and
    refuses with ``raise clusterkit_panel.routes.PanelError(status, message)``.
    A method and path (or operation name) already served is an error naming
    both owners. Return ``None`` or ``[]`` for nothing.
    """
