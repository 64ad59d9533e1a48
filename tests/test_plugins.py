"""The plugin host: built-ins through entry points, third parties the same way, failures named."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from clusterkit import hookimpl
from clusterkit.config import registry_of
from clusterkit.plugins import get_plugin_manager
from clusterkit.registry import RegistryError, ServiceKind

HERE = Path(__file__).parent
CLUSTERKIT = shutil.which("clusterkit", path=os.path.dirname(sys.executable)) or "clusterkit"
BUILTINS = {"transports", "http", "checks", "demo"}


def fake_install(site: Path, dist: str, version: str, entry_points: dict[str, str]) -> None:
    """Make ``site`` look like an installed distribution (what pip writes: dist-info)."""
    info = site / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    lines = "".join(f"{name} = {value}\n" for name, value in entry_points.items())
    (info / "entry_points.txt").write_text(f"[clusterkit]\n{lines}")


def cli(*args: str, site: Path | None = None, env: dict | None = None):
    environ = {**os.environ, **(env or {})}
    if site is not None:
        environ["PYTHONPATH"] = os.pathsep.join([str(site), environ.get("PYTHONPATH", "")])
    return subprocess.run([CLUSTERKIT, *args], capture_output=True, text=True, env=environ,
                          timeout=60)


def test_builtins_are_listed_as_loaded_builtin_plugins():
    result = cli("plugins", "list", "--json")
    assert result.returncode == 0, result.stderr
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    assert BUILTINS <= set(rows)
    for name in BUILTINS:
        assert rows[name]["source"] == "builtin" and rows[name]["state"] == "loaded"
    assert "clusterkit_register_services" in rows["http"]["hooks"]


def test_third_party_plugin_adds_a_command_and_a_service(tmp_path):
    site = tmp_path / "site"
    shutil.copytree(HERE / "plugins" / "clusterkit-sample" / "ck_sample", site / "ck_sample")
    fake_install(site, "clusterkit-sample", "0.3.0", {"sample": "ck_sample"})

    rows = {r["name"]: r for r in json.loads(cli("plugins", "list", "--json", site=site).stdout)}
    assert rows["sample"]["source"] == "third-party"
    assert rows["sample"]["version"] == "0.3.0"
    assert rows["sample"]["hooks"] == ["clusterkit_register_commands",
                                       "clusterkit_register_services"]
    hello = cli("hello", "--name", "ops", site=site)
    assert hello.returncode == 0 and hello.stdout.strip() == "hello, ops, from ck_sample"

    cfg = tmp_path / "c.toml"
    assert cli("init", "-c", str(cfg), "--name", "t", "--manager", "m", "--manager-ip",
               "127.91.1.1", "--state-dir", str(tmp_path / "st"), "--root", str(tmp_path / "root"),
               site=site).returncode == 0
    add = ["policy", "add", "-c", str(cfg), "--vip", "127.91.1.1", "--port", "70",
           "--service", "gopher", "--members", "m=1"]
    refused = cli(*add)
    assert refused.returncode == 2 and "unknown service 'gopher'" in refused.stderr
    assert cli(*add, site=site).returncode == 0


def test_a_plugin_that_fails_to_import_is_reported_and_the_rest_works(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    shutil.copy(HERE / "plugins" / "broken_plugin.py", site / "broken_plugin.py")
    fake_install(site, "broken-plugin", "1.0", {"broken": "broken_plugin"})
    result = cli("plugins", "list", "--json", site=site)
    assert result.returncode == 0
    rows = {r["name"]: r for r in json.loads(result.stdout)}
    assert rows["broken"]["state"] == "failed: RuntimeError: this plugin is broken on purpose"
    assert rows["http"]["state"] == "loaded"


def test_disable_plugins_from_the_environment():
    result = cli("plugins", "list", "--json", env={"CLUSTERKIT_DISABLE_PLUGINS": "http, demo"})
    rows = {r["name"]: r for r in json.loads(result.stdout)}
    assert rows["http"]["state"] == rows["demo"]["state"] == "disabled"
    assert cli("demo", "--help", env={"CLUSTERKIT_DISABLE_PLUGINS": "demo"}).returncode == 2


def test_registering_a_kind_twice_is_an_error_naming_it():
    pm = get_plugin_manager(load_entrypoints=False)

    class Twice:
        @hookimpl
        def clusterkit_register_services(self, register):
            register(ServiceKind("dup", (1,)))
            register(ServiceKind("dup", (2,)))

    pm.register(Twice(), name="twice")
    try:
        with pytest.raises(RegistryError, match="'dup' registered twice"):
            registry_of(pm)
    finally:
        pm.unregister(name="twice")


class Gopher:
    """Claims the service kind and the config section ``gopher``."""

    @hookimpl
    def clusterkit_register_services(self, register):
        register(ServiceKind("gopher", (70,)))

    @hookimpl
    def clusterkit_config_sections(self, register):
        register("gopher", lambda table, report: table)


class GopherSection:
    """Claims only the config section ``gopher``."""

    @hookimpl
    def clusterkit_config_sections(self, register):
        register("gopher", lambda table, report: table)


@pytest.mark.parametrize("second, message", [
    (Gopher, "clusterkit_register_services: ServiceKind 'gopher' registered twice: "
             "by plugin 'second' and by plugin 'first'"),
    (GopherSection, "config section [gopher] registered twice: "
                    "by plugin 'second' and by plugin 'first'"),
])
def test_a_name_claimed_by_two_plugins_is_an_error_naming_both(second, message):
    pm = get_plugin_manager(load_entrypoints=False)
    pm.register(Gopher(), name="first")
    pm.register(second(), name="second")  # registered last: pluggy calls it first
    with pytest.raises(RegistryError) as raised:
        registry_of(pm)
    assert str(raised.value) == message


def test_unknown_hook_implementation_is_refused():
    pm = get_plugin_manager(load_entrypoints=False)

    class Typo:
        @hookimpl
        def clusterkit_regster_services(self, register):
            pass

    pm.register(Typo(), name="typo")
    with pytest.raises(Exception, match="clusterkit_regster_services"):
        pm.check_pending()


def test_lifecycle_hooks_run_through_pluggy_in_order_and_one_failure_skips_no_other():
    """Stopping: async results awaited last first, a failing plugin named, the others still run;
    one that raises before returning a coroutine is left out, no other's coroutine is lost."""
    import asyncio

    from clusterkit.hookcalls import PluginError, call_each

    ran = []

    def plugin(name, fail=None):
        class P:
            @hookimpl
            async def clusterkit_stop(self, runtime):
                ran.append(name)
                if fail == "async":
                    raise OSError(f"{name} broke")

        class Sync:
            @hookimpl
            def clusterkit_stop(self, runtime):
                raise ValueError("raised at once")

        return Sync() if fail == "sync" else P()

    pm = get_plugin_manager(load_entrypoints=False)
    for name, fail in (("first", None), ("eager", "sync"), ("broken", "async"), ("last", None)):
        pm.register(plugin(name, fail), name=name)
    errors = asyncio.run(call_each(pm, "clusterkit_stop", keep_going=True, reverse=True, runtime=None))
    assert ran == ["first", "broken", "last"]  # registered first, so pluggy calls it last
    assert sorted(str(e) for e in errors) == [
        "plugin 'broken' failed in clusterkit_stop: OSError: broken broke",
        "plugin 'eager' failed in clusterkit_stop: ValueError: raised at once"]
    ran.clear()
    with pytest.raises(PluginError, match="plugin 'eager' failed in clusterkit_stop"):
        asyncio.run(call_each(pm, "clusterkit_stop", runtime=None))
    assert ran == []
