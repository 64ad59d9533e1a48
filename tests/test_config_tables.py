"""The one table reader: declared keys checked with their lines, for sections and host options.

A third-party plugin declares a section (``shape=``) and a host option
(``clusterkit_host_options``) with the documented contracts only; the core
reports its problems as ``FILE:LINE: key.path: what`` and knows no option of
its own (the native proxy declares ``proxy_workers``).
"""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from clusterkit import hookimpl
from clusterkit.cli import get_app
from clusterkit.config import load_cluster, parse_cluster, registry_of
from clusterkit.definition.tables import ConfigError, Key, Table, Tables, from_text, read
from clusterkit.definition.values import ip_problem
from clusterkit.plugins import get_plugin_manager
from conftest import write_cluster

CACHE = Table({"size": Key(int, default=64, low=1, high=4096), "mode": Key(str, choices=("lru", "fifo")),
               "peers": Key(list, items=str, default=(), check=ip_problem),
               "owner": Key(str, default="")})


class CachePlugin:
    """A plugin a third party could ship: a ``[cache]`` section and a host option."""

    @hookimpl
    def clusterkit_config_sections(self, register):
        register("cache", lambda values, report: values, shape=CACHE)
        register("mirror", lambda values, report: [v["url"] for v in values if "url" in v],
                 shape=Tables(Table({"url": Key(str, required="where to mirror from")})))

    @hookimpl
    def clusterkit_host_options(self, register):
        register("cache_mb", Key(int, low=1, high=1024), initial=16)


@pytest.fixture
def cache_pm():
    pm = get_plugin_manager()
    pm.register(CachePlugin(), name="cache")
    return pm


def problems_of(path, pm) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_cluster(path, pm)
    return str(info.value).splitlines()


def test_a_declared_section_is_read_with_defaults(tmp_path, cache_pm):
    path = write_cluster(tmp_path / "c.toml", "127.94.0", nodes=1, extra=(
        '\n[cache]\nmode = "lru"\nowner = "ops"\npeers = ["127.94.0.11"]\n'
        '\n[[mirror]]\nurl = "https://a"\n'))
    cluster = load_cluster(path, cache_pm)
    assert cluster.sections["cache"] == {"size": 64, "mode": "lru", "owner": "ops",
                                         "peers": ("127.94.0.11",)}
    assert cluster.sections["mirror"] == ["https://a"]


def test_every_problem_of_a_declared_section_has_its_line(tmp_path, cache_pm):
    path = write_cluster(tmp_path / "c.toml", "127.94.0", nodes=1, extra=(
        '\n[cache]\nsize = 1e400\nmode = "random"\npeers = ["127.94.0.11", "nowhere", 5]\n'
        'colour = "blue"\n\n[[mirror]]\nname = "x"\n'))
    found = problems_of(path, cache_pm)
    assert found == [
        f"{path}:18: cache.size: must be an integer in 1..4096, not inf",
        f"{path}:19: cache.mode: unknown mode 'random' (known: lru, fifo)",
        f"{path}:20: cache.peers[1]: 'nowhere' is not an IP address",
        f"{path}:20: cache.peers[2]: must be a string, not 5",
        f"{path}:21: cache.colour: unknown key (known: size, mode, peers, owner)",
        f"{path}:23: mirror[0].url: is required: where to mirror from",
        f"{path}:24: mirror[0].name: unknown key (known: url)",
    ]


@pytest.mark.parametrize("value, message", [
    ("true", "must be an integer in 1..1024, not True"), ('"big"', "must be an integer in 1..1024, not 'big'"),
    ("0", "0 is out of range (1..1024)"), ("2.5", "must be an integer in 1..1024, not 2.5")])
def test_a_plugins_host_option_is_checked_with_its_line(tmp_path, cache_pm, value, message):
    path = write_cluster(tmp_path / "c.toml", "127.94.0", nodes=1)
    path.write_text(path.read_text().replace("public_ips", f"options = {{ cache_mb = {value} }}\npublic_ips"))
    assert problems_of(path, cache_pm) == [f"{path}:8: manager.options.cache_mb: {message}"]


def test_without_the_plugin_its_option_is_free_form(tmp_path, pm):
    """The core checks no option of its own: without the proxy, proxy_workers is anybody's."""
    path = write_cluster(tmp_path / "c.toml", "127.94.0", nodes=1)
    path.write_text(path.read_text().replace("public_ips", 'options = { proxy_workers = "lots" }\npublic_ips'))
    assert "manager.options.proxy_workers" in "\n".join(problems_of(path, pm))
    pm = get_plugin_manager()
    pm.unregister(name="proxy")
    assert load_cluster(path, pm).manager.options == {"proxy_workers": "lots"}


def test_init_writes_the_plugins_initial_options_typed_as_declared(tmp_path, cache_pm):
    app = get_app(cache_pm)
    path = tmp_path / "c.toml"
    result = CliRunner().invoke(app, ["init", "-c", str(path), "--name", "x", "--manager", "m",
                                      "--manager-ip", "127.94.0.1", "--state-dir", str(tmp_path / "st"),
                                      "--root", str(tmp_path / "r"), "--option", "cache_mb=32"])
    assert result.exit_code == 0, result.output
    assert load_cluster(path, cache_pm).manager.options == {"proxy_workers": "auto", "cache_mb": 32}


def test_a_host_option_declared_twice_is_refused():
    pm = get_plugin_manager()

    class Again:
        @hookimpl
        def clusterkit_host_options(self, register):
            register("proxy_workers", Key(int, low=1, high=2))

    pm.register(Again())
    with pytest.raises(Exception, match="host option 'proxy_workers' registered twice: by plugin .* and by plugin 'proxy'"):
        registry_of(pm)


def test_the_reader_without_a_file():
    problems = []
    values = read({"size": True, "mode": "fifo"}, CACHE, lambda *p: problems.append(p), "cache")
    assert values == {"size": 64, "mode": "fifo", "peers": (), "owner": ""}
    assert problems == [("cache.size", "must be an integer in 1..4096, not True")]
    assert read("x", Tables(CACHE), lambda *p: problems.append(p), "c") == []
    assert problems[-1] == ("c", "must be an array of tables ([[...]]), not a string")
    with pytest.raises(TypeError):
        Key(int)  # every number is bounded
    assert (from_text(Key(int, low=0, high=9), "7"), from_text(Key(object), "auto"),
            from_text(Key(float, low=0, high=1), "0.5"), from_text(Key(bool), "true")) == (7, "auto", 0.5, True)


def test_keys_the_operator_names_are_read_through_the_extra_shape():
    problems = []
    report = lambda *p: problems.append(p)  # noqa: E731
    named = Table({"default": Key(str)}, extra=Table({"port": Key(int, default=53, low=1, high=65535)}))
    values = read({"default": "a", "a": {}, "b": {"port": 0}, "c": 5}, named, report, "keys")
    assert values == {"default": "a", "a": {"port": 53}, "b": {"port": 53}, "c": {"port": 53}}
    assert problems == [("keys.b.port", "0 is out of range (1..65535)"),
                        ("keys.c", "must be a table, not an integer")]
    problems.clear()
    ips = Table(extra=Key(str, check=lambda v: None if v.count(".") == 3 else f"{v!r} is no IPv4"))
    assert read({"n1": "1.2.3.4", "n2": "x", "n3": 7}, ips, report) == {"n1": "1.2.3.4"}
    assert problems == [("n2", "'x' is no IPv4"), ("n3", "must be a string, not 7")]


def test_the_core_tables_go_through_the_same_reader(pm):
    text = ('[cluster]\nname = "c"\n\n[manager]\nname = "m"\nip = "127.94.0.1"\n'
            'public_ips = ["127.94.0.100", "x"]\n\n[[policy]]\nvip = "127.94.0.100"\nport = 80\n'
            'service = "http"\nmembers = {}\nproxy_protocol = "v3"\n')
    with pytest.raises(ConfigError) as info:
        parse_cluster(text, "/etc/ck.toml", registry_of(pm))
    assert [p.format("/etc/ck.toml") for p in info.value.problems] == [
        "/etc/ck.toml:7: manager.public_ips[1]: 'x' is not an IP address",
        "/etc/ck.toml:14: policy[0].proxy_protocol: unknown proxy_protocol 'v3' (known: \"\", v1, v2)"]
