"""Client keys (spec 4.9 + DESIGN "Deliberate differences"): forwarding headers only via trusted
proxies, right-most untrusted hop, IPv6 keyed by /64."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest

from registryd.abuse.clientip import ClientKeys

PEER = "203.0.113.5"


def scope(peer: str | None = PEER, *headers: tuple[str, str]) -> dict[str, Any]:
    return {
        "type": "http",
        "client": None if peer is None else (peer, 1234),
        "headers": [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers],
    }


FORWARDING_HEADERS = [
    ("X-Forwarded-For", "198.51.100.7"),
    ("X-Forwarded-For", "198.51.100.7, 10.0.0.1"),
    ("X_FORWARDED_FOR", "198.51.100.7"),
    ("X-Real-IP", "198.51.100.7"),
    ("Forwarded", "for=198.51.100.7"),
    ("Forwarded", 'for="[2001:db8::1]";proto=https'),
]


@pytest.mark.parametrize("trusted", [(), ("10.0.0.0/8",)])
@pytest.mark.parametrize(("name", "value"), FORWARDING_HEADERS)
def test_headers_from_an_untrusted_peer_never_change_the_key(
    trusted: tuple[str, ...], name: str, value: str
) -> None:
    assert ClientKeys(trusted)(scope(PEER, (name, value))) == PEER


@pytest.mark.parametrize(("name", "value"), FORWARDING_HEADERS[2:])
def test_only_x_forwarded_for_is_honoured_from_a_trusted_peer(name: str, value: str) -> None:
    assert ClientKeys(["10.0.0.1"])(scope("10.0.0.1", (name, value))) == "10.0.0.1"


def test_peer_address_is_the_key() -> None:
    keys = ClientKeys([])
    assert keys(scope("203.0.113.5")) == "203.0.113.5"
    assert keys(scope("2001:db8:1:2:aaaa:bbbb:cccc:dddd")) == "2001:db8:1:2::/64"
    assert keys(scope("::1")) == "::/64"


@pytest.mark.parametrize("trusted", [(), ("10.0.0.1",)])
def test_no_client_is_unknown(trusted: tuple[str, ...]) -> None:
    keys = ClientKeys(trusted)
    assert keys(scope(None)) == "unknown"
    assert keys({"type": "http", "headers": []}) == "unknown"
    assert keys({"type": "http", "headers": [], "client": ("", 0)}) == "unknown"


@pytest.mark.parametrize("trusted", [(), ("10.0.0.1",)])
def test_a_thousand_addresses_in_one_64_share_one_key(trusted: tuple[str, ...]) -> None:
    keys = ClientKeys(trusted)
    net = ipaddress.IPv6Network("2001:db8:1:2::/64")
    step = (1 << 64) // 1000
    found = {keys(scope(str(net[i * step + 1]))) for i in range(1000)}
    assert found == {"2001:db8:1:2::/64"}
    assert keys(scope("2001:db8:1:3::1")) == "2001:db8:1:3::/64"


@pytest.mark.parametrize("trusted", [(), ("10.0.0.1",)])
def test_ipv4_mapped_ipv6_is_the_ipv4_address(trusted: tuple[str, ...]) -> None:
    assert ClientKeys(trusted)(scope("::ffff:203.0.113.5")) == "203.0.113.5"


def test_ipv4_mapped_peer_matches_an_ipv4_trusted_proxy() -> None:
    keys = ClientKeys(["10.0.0.1"])
    assert keys(scope("::ffff:10.0.0.1", ("X-Forwarded-For", "198.51.100.7"))) == "198.51.100.7"


def test_single_trusted_proxy() -> None:
    keys = ClientKeys(["10.0.0.1"])
    assert keys(scope("10.0.0.1", ("X-Forwarded-For", "198.51.100.7"))) == "198.51.100.7"
    assert keys(scope("10.0.0.2", ("X-Forwarded-For", "198.51.100.7"))) == "10.0.0.2"


def test_proxy_chain_with_cidr() -> None:
    keys = ClientKeys(["10.0.0.0/8"])
    xff = ("X-Forwarded-For", "198.51.100.7, 10.2.2.2,10.3.3.3")
    assert keys(scope("10.1.1.1", xff)) == "198.51.100.7"


def test_spoofed_left_most_entries_are_ignored() -> None:
    keys = ClientKeys(["10.0.0.1", "10.0.0.2"])
    xff = ("X-Forwarded-For", "6.6.6.6, 198.51.100.7, 10.0.0.2")  # evil, client, proxy2
    assert keys(scope("10.0.0.1", xff)) == "198.51.100.7"


def test_every_occurrence_of_the_header_counts_in_order() -> None:
    keys = ClientKeys(["10.0.0.0/8"])
    s = scope(
        "10.0.0.1", ("X-Forwarded-For", "6.6.6.6, 198.51.100.7"), ("X-Forwarded-For", "10.0.0.2")
    )
    assert keys(s) == "198.51.100.7"


def test_forwarded_ipv6_client_is_keyed_by_64_and_mapped_by_ipv4() -> None:
    keys = ClientKeys(["2001:db8:ffff::/48"])
    peer = "2001:db8:ffff::1"
    assert keys(scope(peer, ("X-Forwarded-For", "2001:db8:5:6::7"))) == "2001:db8:5:6::/64"
    assert keys(scope(peer, ("X-Forwarded-For", "::ffff:198.51.100.7"))) == "198.51.100.7"


@pytest.mark.parametrize(
    "value",
    [
        "",
        " , ,",
        "10.0.0.2",  # every hop trusted
        "10.0.0.2, 10.0.0.3",
        "garbage",
        "unknown",
        "198.51.100.7, garbage",  # garbage right of the client: stop, use the peer
        "garbage, 10.0.0.2",
        "198.51.100.7:4711",  # ports are not addresses
        "[2001:db8::1]",
        "01.2.3.4",
        "198.51.100.7 10.0.0.2",
    ],
)
def test_unusable_chains_fall_back_to_the_peer(value: str) -> None:
    keys = ClientKeys(["10.0.0.0/8"])
    assert keys(scope("10.0.0.1", ("X-Forwarded-For", value))) == "10.0.0.1"
    assert keys(scope("10.0.0.1")) == "10.0.0.1"


def test_rotating_garbage_behind_a_trusted_proxy_is_one_key() -> None:
    keys = ClientKeys(["10.0.0.1"])
    found = {keys(scope("10.0.0.1", ("X-Forwarded-For", f"host-{i}"))) for i in range(100)}
    assert found == {"10.0.0.1"}


def test_empty_entries_are_skipped() -> None:
    keys = ClientKeys(["10.0.0.1"])
    assert keys(scope("10.0.0.1", ("X-Forwarded-For", "198.51.100.7,, "))) == "198.51.100.7"


def test_a_zoned_link_local_peer_is_keyed_by_its_64() -> None:
    assert ClientKeys([])(scope("fe80::1%eth0")) == "fe80::/64"


def test_ipv6_keys_are_canonical() -> None:
    keys = ClientKeys([])
    assert keys(scope("2001:0DB8:0000:0000:0001::1")) == "2001:db8::/64"
    assert keys(scope("2001:db8:0:1:0:0:0:1")) == "2001:db8:0:1::/64"
