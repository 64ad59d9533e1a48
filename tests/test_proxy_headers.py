"""PROXY protocol headers for IPv6 and odd cases, and the engine factory's option check."""

import os
from types import SimpleNamespace

import pytest

from clusterkit.proxy import proxyproto
from clusterkit.proxy.plugin import native_engine

SIG = bytes.fromhex("0d0a0d0a000d0a515549540a")


def test_v1_tcp6():
    assert proxyproto.v1(("2001:db8::1", 51000), ("2001:db8::a", 443)) == \
        b"PROXY TCP6 2001:db8::1 2001:db8::a 51000 443\r\n"


def test_v2_tcp6():
    header = proxyproto.v2(("2001:db8::1", 51000), ("2001:db8::a", 443))
    assert header[:12] == SIG and header[12:16] == b"\x21\x21\x00\x24"   # PROXY, TCP6, 36 bytes
    assert header[16:32] == bytes.fromhex("20010db8000000000000000000000001")
    assert header[32:48] == bytes.fromhex("20010db800000000000000000000000a")
    assert header[48:] == (51000).to_bytes(2, "big") + (443).to_bytes(2, "big")


def test_ipv4_mapped_addresses_are_sent_as_ipv4():
    assert proxyproto.v1(("::ffff:192.0.2.1", 1000), ("::ffff:192.0.2.9", 80)) == \
        b"PROXY TCP4 192.0.2.1 192.0.2.9 1000 80\r\n"


def test_mixed_families_say_unknown():
    assert proxyproto.v1(("192.0.2.1", 1), ("2001:db8::a", 2)) == b"PROXY UNKNOWN\r\n"
    assert proxyproto.v2(("192.0.2.1", 1), ("2001:db8::a", 2)) == SIG + b"\x21\x00\x00\x00"


@pytest.mark.parametrize("bad", [0, 65, "2", True, 1.5])
def test_proxy_workers_option_is_checked(bad):
    runtime = SimpleNamespace(host=SimpleNamespace(options={"proxy_workers": bad}),
                              registry=None, config_path="/etc/clusterkit/cluster.toml")
    with pytest.raises(ValueError, match="manager.options.proxy_workers"):
        native_engine(runtime)


def test_one_process_by_default():
    runtime = SimpleNamespace(host=SimpleNamespace(options={}), registry=None, config_path="x")
    assert native_engine(runtime).workers is None


def test_auto_means_one_process_per_usable_cpu():
    runtime = SimpleNamespace(host=SimpleNamespace(options={"proxy_workers": "auto"}),
                              registry=None, config_path="x")
    assert native_engine(runtime).processes == len(os.sched_getaffinity(0))
