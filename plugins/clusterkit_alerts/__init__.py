"""Alerts: tell someone when a node goes down, replication stalls or a watcher goes deaf.

``[alerts]`` in the definition turns it on for the manager: conditions are
read from the manager's own status (:mod:`clusterkit_alerts.rules`), grouped
into one message per burst, kept across restarts and delivered to a webhook
(HMAC-signed JSON) and/or by e-mail through an SMTP relay; other plugins can
deliver elsewhere through the ``clusterkit_alert`` hook. ``clusterkit alert
test`` sends one alert of each kind.
"""

from clusterkit import hookimpl

COMPONENT = "alerts"


@hookimpl
def clusterkit_config_sections(register):
    from clusterkit_alerts.settings import parse_alerts

    register("alerts", parse_alerts)


@hookimpl
def clusterkit_register_commands(app):
    from clusterkit_alerts.cli import app as alert_app

    app.add_typer(alert_app, name="alert")


@hookimpl
async def clusterkit_start(runtime):
    from clusterkit_alerts.alerter import Alerter
    from clusterkit_alerts.settings import settings_of

    settings = settings_of(runtime.cluster)
    if runtime.is_manager and settings is not None:
        await runtime.start_component(COMPONENT, Alerter(runtime, settings))


@hookimpl
async def clusterkit_reload(runtime, old, new):
    from clusterkit_alerts.settings import settings_of

    if settings_of(new) is None:  # [alerts] removed
        await runtime.stop_component(COMPONENT)
    elif COMPONENT in runtime.components:
        await runtime.reload_component(COMPONENT, old, new)
    else:
        await clusterkit_start(runtime)


@hookimpl
async def clusterkit_stop(runtime):
    await runtime.stop_component(COMPONENT)


@hookimpl
def clusterkit_membership_changed(runtime, policy, node, service, old, new, reason):
    alerter = runtime.components.get(COMPONENT)
    if alerter is not None:
        alerter.wake.set()  # judge at once, not at the next interval


@hookimpl
def clusterkit_status(runtime):
    return runtime.component_status(COMPONENT)


@hookimpl
def clusterkit_status_summary(report, summary):
    alerts = report.get("alerts")
    if not isinstance(alerts, dict):
        return
    for sender, queued in (alerts.get("undelivered") or {}).items():
        if queued.get("last_error"):
            summary.problem(f"alerts: {queued['messages']} message(s) not delivered by {sender}: "
                            f"{queued['last_error']}")
    summary.line(f"alerts: {len(alerts.get('firing') or [])} firing, {alerts.get('sent', 0)} "
                 f"message(s) sent by {', '.join(alerts.get('senders') or []) or 'no sender'}")
