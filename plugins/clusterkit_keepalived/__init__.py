"""keepalived (VRRP) carries the public IPs between the manager and its standbys.

With a ``[[standby]]`` in the definition, every manager's daemon runs
keepalived as its child (:mod:`clusterkit_keepalived.supervisor`) from a
configuration it writes (:mod:`clusterkit_keepalived.conf`); the host VRRP
makes MASTER is promoted, one that loses the addresses demoted
(:mod:`clusterkit.standby.promotion`). ``[vrrp] enabled = false`` leaves
promotion to ``clusterkit manager promote`` (or a system keepalived calling
``clusterkit manager vrrp-notify``). See docs/high-availability.md.
"""

from clusterkit import hookimpl

COMPONENT = "vrrp"


@hookimpl
def clusterkit_config_sections(register):
    from clusterkit_keepalived.settings import VRRP, parse_vrrp

    register("vrrp", parse_vrrp, shape=VRRP)


@hookimpl
def clusterkit_register_commands(app, groups):
    from clusterkit_keepalived.cli import register

    register(groups)


@hookimpl
async def clusterkit_start(runtime):
    from clusterkit_keepalived.settings import vrrp_settings
    from clusterkit_keepalived.supervisor import Vrrp

    vrrp = runtime.components.get(COMPONENT)  # a role switch starts the plugins again:
    if vrrp is None:                            # keepalived keeps running, its commands return
        if (runtime.host.role not in ("manager", "standby") or not runtime.cluster.standbys
                or not vrrp_settings(runtime.cluster).enabled):
            return
        vrrp = Vrrp(runtime)
        await runtime.start_component(COMPONENT, vrrp)
    runtime.add_control("vrrp_notify", _notify(vrrp))
    runtime.add_control("vrrp_health", vrrp.health)
    runtime.add_control("vrrp_give_up", _give_up(vrrp))


def _notify(vrrp):
    def vrrp_notify(state: str) -> dict:
        from clusterkit_keepalived.supervisor import STATES

        if state not in STATES:
            raise ValueError(f"unknown VRRP state {state!r} (known: {', '.join(STATES)})")
        return vrrp.notified(state)

    return vrrp_notify


def _give_up(vrrp):
    def vrrp_give_up(why: str = "clusterkit manager switchover") -> dict:
        if not vrrp.runtime.is_manager:
            raise ValueError(f"{vrrp.runtime.host.name} does not act as the manager")
        return vrrp.give_up(why)

    return vrrp_give_up


@hookimpl
async def clusterkit_reload(runtime, old, new):
    await runtime.reload_component(COMPONENT, old, new)


@hookimpl
async def clusterkit_stop(runtime):
    if not runtime.switching:
        await runtime.stop_component(COMPONENT)


@hookimpl
def clusterkit_status(runtime):
    return runtime.component_status(COMPONENT)


@hookimpl
def clusterkit_status_summary(report, summary):
    vrrp = report.get("vrrp")
    if not isinstance(vrrp, dict):
        return
    line = (f"vrrp: {vrrp.get('state')} on {vrrp.get('interface')}, "
            f"{'holds' if vrrp.get('holds_addresses') else 'does not hold'} the public IPs, "
            f"keepalived {'pid ' + str(vrrp['pid']) if vrrp.get('pid') else 'not running'}")
    (summary.line if vrrp.get("pid") else summary.problem)(line)
