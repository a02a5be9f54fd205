"""The peer exchange's dial rules, with no network: budgets, backoff, verified addresses."""

from __future__ import annotations

from hearth.p2p import dialing
from hearth.p2p.dialing import AddressBook, Hearsay, TokenBuckets


def hearsay(index: int, *, source: str = "hostile", target_ip: str = "10.0.0.9") -> Hearsay:
    addr = f"/ip4/{target_ip}/tcp/{1000 + index}"
    return Hearsay(f"peer{index}", addr, target_ip, source, "10.0.0.3")


def test_token_bucket_bursts_then_refills_slowly() -> None:
    buckets = TokenBuckets(burst=2, refill_ms=1000)
    for _ in range(2):
        assert buckets.available("k", 0)
        buckets.take("k", 0)
    assert not buckets.available("k", 999)
    assert buckets.available("k", 1000)


def test_one_source_naming_hundreds_of_addresses_gets_its_burst() -> None:
    book = AddressBook()
    named = [hearsay(i, target_ip=f"10.0.{i // 250}.{i % 250}") for i in range(300)]
    allowed = [h for h in named if book.may_dial(h, 0)]
    assert len(allowed) == dialing.DIALS_PER_SOURCE_PEER[0]


def test_many_sources_on_one_ip_share_a_budget() -> None:
    book = AddressBook()
    named = [hearsay(i, source=f"s{i}", target_ip=f"10.1.{i // 250}.{i % 250}") for i in range(300)]
    allowed = [h for h in named if book.may_dial(h, 0)]
    assert len(allowed) == dialing.DIALS_PER_SOURCE_IP[0]


def test_a_victim_ip_gets_its_budget_whoever_names_it() -> None:
    book = AddressBook()
    allowed = [h for i in range(300) if book.may_dial(h := hearsay(i, source=f"s{i}"), 0)]
    assert len(allowed) == dialing.DIALS_PER_TARGET_IP[0]


def test_a_failed_address_backs_off_doubling_and_a_working_one_is_passed_on() -> None:
    book = AddressBook()
    addr = "/ip4/10.0.0.9/tcp/4001"
    book.record_failed(addr, 0)
    assert book.in_backoff(addr, dialing.ADDR_BACKOFF_MS_MIN - 1)
    assert not book.in_backoff(addr, dialing.ADDR_BACKOFF_MS_MIN)
    book.record_failed(addr, 0)
    assert book.in_backoff(addr, 2 * dialing.ADDR_BACKOFF_MS_MIN - 1)
    for _ in range(40):
        book.record_failed(addr, 0)
    assert not book.in_backoff(addr, dialing.ADDR_BACKOFF_MS_MAX)
    assert book.verified("p") == []
    book.record_working("p", addr)
    assert book.verified("p") == [addr] and not book.in_backoff(addr, 0)


def test_verified_addresses_are_bounded_per_peer() -> None:
    book = AddressBook()
    for port in range(10):
        book.record_working("p", f"/ip4/10.0.0.9/tcp/{port}")
    assert len(book.verified("p")) == dialing.VERIFIED_ADDRS_PER_PEER_MAX
