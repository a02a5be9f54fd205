"""Address scopes and who may be told which address (ADR 0035); dial-back wire and verdicts."""

from __future__ import annotations

from hearth.p2p import addresses
from hearth.p2p.addresses import Scope, scope_of
from hearth.p2p.reachability import (
    Answer,
    Reachability,
    State,
    dialback_targets,
    encode_answer,
    encode_request,
    parse_answer,
    parse_request,
)

HOME = "/ip4/192.168.1.10/tcp/4001"
PUBLIC = "/ip4/203.0.113.7/tcp/4001"
LOOP = "/ip4/127.0.0.3/tcp/4001"
RELAYED = "/ip4/203.0.113.1/tcp/4001/p2p/12D3KooWRelay/p2p-circuit"


def test_scopes_count_lab_documentation_ranges_as_public() -> None:
    assert scope_of("192.168.1.10") is Scope.PRIVATE
    assert scope_of("10.1.2.3") is Scope.PRIVATE
    assert scope_of("100.64.0.9") is Scope.PRIVATE  # carrier-grade NAT
    assert scope_of("127.0.0.5") is Scope.LOOPBACK
    assert scope_of("203.0.113.7") is Scope.PUBLIC
    assert scope_of("8.8.8.8") is Scope.PUBLIC
    assert scope_of("0.0.0.0") is Scope.UNUSABLE
    assert scope_of("not-an-ip") is Scope.UNUSABLE


def test_a_home_address_goes_only_to_its_own_lan() -> None:
    # The other home behind NAT is seen by its router's public IP: it must not get 192.168.1.10,
    # which in its own home is itself.
    assert not addresses.reachable_from(HOME, "198.51.100.2")
    assert addresses.reachable_from(HOME, "192.168.1.20")
    assert not addresses.reachable_from(HOME, "192.168.7.20")
    assert not addresses.reachable_from(LOOP, "192.168.1.20")
    assert addresses.reachable_from(LOOP, "127.0.0.9")
    assert addresses.reachable_from(PUBLIC, "192.168.1.20")
    assert addresses.reachable_from(RELAYED, "198.51.100.2")  # judged by the relay's address
    assert addresses.shareable([HOME, PUBLIC, RELAYED], "198.51.100.2") == [PUBLIC, RELAYED]
    assert addresses.shareable([HOME, PUBLIC], "") == [PUBLIC]  # unknown requester: public only


def test_claiming_another_public_ip_is_foreign_but_a_lan_address_is_not() -> None:
    assert addresses.claims_foreign_public(PUBLIC, "198.51.100.2")
    assert not addresses.claims_foreign_public(PUBLIC, "203.0.113.7")
    assert not addresses.claims_foreign_public(HOME, "198.51.100.2")  # behind NAT: normal
    assert not addresses.claims_foreign_public(RELAYED, "198.51.100.2")
    assert not addresses.claims_foreign_public(PUBLIC, "127.0.0.2")  # we cannot tell


def test_advertised_addresses_are_ordered_deduplicated_and_bounded() -> None:
    listen = ["/ip4/0.0.0.0/tcp/4001", HOME]
    got = addresses.advertised(listen, [PUBLIC], [PUBLIC, "/ip4/203.0.113.9/tcp/4001"], [RELAYED])
    assert got == [PUBLIC, "/ip4/203.0.113.9/tcp/4001", HOME, RELAYED]
    many = [f"/ip4/203.0.113.{i}/tcp/1" for i in range(20)]
    assert len(addresses.advertised(many, [], [], [])) == addresses.ADVERTISED_ADDRS_MAX


def test_dialback_dials_only_the_requesters_own_ip() -> None:
    request = encode_request([HOME, "/ip4/8.8.8.8/tcp/53", "/ip4/1.2.3.4/udp/9", "garbage"])
    candidates = parse_request(request)
    assert candidates == [HOME, "/ip4/8.8.8.8/tcp/53"]  # a udp line and garbage are skipped
    assert dialback_targets(candidates, "198.51.100.2") == [
        "/ip4/198.51.100.2/tcp/4001",
        "/ip4/198.51.100.2/tcp/53",
    ]


def test_answers_round_trip_and_lies_about_other_ips_are_refused() -> None:
    data = encode_answer("198.51.100.2", [("/ip4/198.51.100.2/tcp/4001", False)])
    assert parse_answer(data) == Answer("198.51.100.2", (), ("/ip4/198.51.100.2/tcp/4001",))
    assert parse_answer(encode_answer("198.51.100.2", [(PUBLIC, True)])) is None
    assert parse_answer(b"observed 1.2.3.4\nhello") is None
    assert parse_answer(b"") is None


def test_reachability_follows_most_servers_and_a_tie_keeps_the_state() -> None:
    view = Reachability()
    assert view.current() is State.UNKNOWN
    missed = Answer("198.51.100.2", (), ("/ip4/198.51.100.2/tcp/4001",))
    reached = Answer("198.51.100.2", ("/ip4/198.51.100.2/tcp/4001",), ())
    assert view.record("a", missed) is State.PRIVATE
    assert view.record("b", reached) is State.PRIVATE  # one each: unchanged
    assert view.record("c", reached) is State.PUBLIC
    assert view.confirmed_addrs() == ["/ip4/198.51.100.2/tcp/4001"]
    for server in "defgh":  # only the last ANSWERS_KEPT servers count
        view.record(server, missed)
    assert view.current() is State.PRIVATE
    assert Reachability(forced=State.PUBLIC).current() is State.PUBLIC
