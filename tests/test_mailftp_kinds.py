"""The mail and ftp service kinds as registered, and the ftp options checked at load time."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from clusterkit.cli import get_app
from clusterkit.config import registry_of
from clusterkit.plugins import get_plugin_manager
from clusterkit_ftp.handler import FtpHandler
from clusterkit_ftp.options import FtpOptions, check_options, ftp_options, parse_range

CLUSTERKIT = shutil.which("clusterkit", path=os.path.dirname(sys.executable)) or "clusterkit"

MAIL = {"smtp": 25, "submission": 587, "smtps": 465, "pop3": 110, "pop3s": 995,
        "imap": 143, "imaps": 993}


DEFAULT_CHECKS = {"smtp": "smtp", "submission": "smtp", "smtps": "smtp", "pop3": "pop3",
                  "pop3s": "pop3", "imap": "imap", "imaps": "imap", "ftp": "ftp"}


def test_mail_kinds_are_plain_relays_on_their_ports(pm):
    services = registry_of(pm).services
    for name, port in MAIL.items():
        kind = services[name]
        assert kind.ports == (port,) and kind.handler is None


def test_default_checks_are_the_greeting_checks_and_registered(pm):
    registry = registry_of(pm)
    for name, check in DEFAULT_CHECKS.items():
        assert registry.services[name].check == check and check in registry.checks


def test_ftp_kind_has_the_ftp_handler_and_checks_its_options(pm):
    kind = registry_of(pm).services["ftp"]
    assert kind.ports == (21,) and kind.handler is FtpHandler
    assert kind.persistence > 0 and kind.check_options is check_options


def test_plugins_list_shows_mail_and_ftp_as_builtins():
    result = subprocess.run([CLUSTERKIT, "plugins", "list", "--json"], capture_output=True,
                            text=True, timeout=60)
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    for name in ("mail", "ftp"):
        assert rows[name]["source"] == "builtin" and rows[name]["state"] == "loaded"
        assert "clusterkit_register_services" in rows[name]["hooks"]


def problems(raw: dict) -> list[tuple[str, str]]:
    found = []
    check_options(raw, lambda key, message: found.append((key, message)))
    return found


def test_ranges_and_defaults():
    assert parse_range("50000-50999") == range(50000, 51000)
    assert parse_range(" 2000 - 2000 ") == range(2000, 2001)
    assert problems({}) == []
    assert problems({"passive_ports": "40000-40099", "ftps_passive_ports": "40100-40199",
                     "data_timeout": 5, "passive_per_client": 2}) == []


@pytest.mark.parametrize("raw, key, words", [
    ({"passive_ports": 50000}, "passive_ports", "must be a string"),
    ({"passive_ports": "50000:50999"}, "passive_ports", "not a port range"),
    ({"passive_ports": "500-600"}, "passive_ports", "1024 <= first"),
    ({"passive_ports": "\uff11\uff10\uff12\uff14-2000"}, "passive_ports", "not a port range"),
    ({"passive_ports": "1" * 5000 + "-2000"}, "passive_ports", "not a port range"),
    ({"passive_ports": "6000-5000"}, "passive_ports", "1024 <= first"),
    ({"ftps_passive_ports": "50500-51500"}, "ftps_passive_ports", "overlaps passive_ports"),
    ({"data_timeout": 0}, "data_timeout", "0.1..3600"),
    ({"data_timeout": True}, "data_timeout", "0.1..3600"),
    ({"pasv_ports": "50000-50999"}, "pasv_ports", "unknown key (known: passive_ports, "),
    ({"passive_per_client": 0}, "passive_per_client", "1..65535"),
    ({"passive_per_client": 2.5}, "passive_per_client", "must be an integer in 1..65535"),
])
def test_bad_options_are_reported_by_key(raw, key, words):
    found = problems(raw)
    assert len(found) == 1 and found[0][0] == key and words in found[0][1], found


def test_options_of_a_policy_are_read_once(pm, tmp_path):
    from clusterkit.config import parse_cluster

    text = ('[cluster]\nname = "t"\n[manager]\nname = "m"\nip = "127.85.9.1"\n'
            'public_ips = ["127.85.9.100"]\n[[node]]\nname = "n1"\nip = "127.85.9.11"\n'
            '[[policy]]\nvip = "127.85.9.100"\nport = 21\nservice = "ftp"\nmembers = {n1 = 1}\n'
            'options = {passive_ports = "41000-41009", data_timeout = 2.5}\n')
    policy = parse_cluster(text, "x.toml", registry_of(pm)).policies[0]
    assert ftp_options(policy) == FtpOptions(range(41000, 41010), range(51000, 52000), 2.5)
    assert policy.persistence == 300  # the ftp default


def test_config_check_names_file_line_and_key(tmp_path):
    path = tmp_path / "cluster.toml"
    path.write_text('[cluster]\nname = "t"\n\n[manager]\nname = "m"\nip = "127.85.9.1"\n'
                    'public_ips = ["127.85.9.100"]\n\n[[node]]\nname = "n1"\nip = "127.85.9.11"\n\n'
                    '[[policy]]\nvip = "127.85.9.100"\nport = 21\nservice = "ftp"\n'
                    'members = {n1 = 1}\noptions = {passive_ports = "50000-49000"}\n')
    result = CliRunner().invoke(get_app(get_plugin_manager()), ["config", "check", "-c", str(path)])
    assert result.exit_code == 2
    assert f"{path}:18: policy[0].options.passive_ports: '50000-49000' must satisfy" \
        in result.output
