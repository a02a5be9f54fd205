"""The network-namespace lab: NAT homes on one private address, router kinds, shaping, faults."""

from __future__ import annotations

import statistics
import subprocess
import sys

from hearth.testnet.netns import lab as lab_module
from hearth.testnet.netns.lab import Lab, cleanup_stale, list_namespaces
from hearth.testnet.netns.spec import HomeSpec, LabSpec, LinkClass
from tests.netns_lab import MakeLab, make_lab, probe, require_netns, serve

__all__ = ["make_lab"]  # the fixture

PORT = 7001


def test_homes_on_the_same_address_reach_public_nodes_through_their_routers(
    make_lab: MakeLab,
) -> None:
    lab = make_lab(
        LabSpec(public=("lan", "lan"), homes=(HomeSpec("port-restricted"), HomeSpec("symmetric")))
    )
    assert lab.slot("h0n0").address == lab.slot("h1n0").address == "192.168.1.10"
    serve(lab, "p0", PORT)
    serve(lab, "p1", PORT)
    seen = {}
    for home in ("h0n0", "h1n0"):
        for public in ("p0", "p1"):
            result = probe(
                lab, home, "connect", lab.slot(public).address, str(PORT), "--local-port", "40000"
            )
            assert result["result"] == "connected", result
            seen[home, public] = result["seen"]
    assert seen["h0n0", "p0"].split(":")[0] == "198.51.100.10"
    assert seen["h1n0", "p0"].split(":")[0] == "198.51.100.11"
    # port-restricted keeps one mapping (the same port) for every destination...
    assert seen["h0n0", "p0"].split(":")[1] == seen["h0n0", "p1"].split(":")[1] == "40000"
    # ...a symmetric router gives each destination a new port
    assert seen["h1n0", "p0"].split(":")[1] != seen["h1n0", "p1"].split(":")[1]


def test_routers_drop_or_reset_unsolicited_connections(make_lab: MakeLab) -> None:
    lab = make_lab(
        LabSpec(public=("lan",), homes=(HomeSpec("port-restricted"), HomeSpec("symmetric")))
    )
    serve(lab, "h0n0", PORT)
    serve(lab, "h1n0", PORT)
    dropped = probe(lab, "p0", "connect", "198.51.100.10", str(PORT), "--timeout-s", "1.5")
    reset = probe(lab, "p0", "connect", "198.51.100.11", str(PORT), "--timeout-s", "1.5")
    assert dropped["result"] == "timeout", dropped
    assert reset["result"] == "refused" and reset["ms"] < 500, reset


def test_delay_of_20_ms_plus_minus_5_each_way_gives_a_40_plus_minus_10_ms_round_trip(
    make_lab: MakeLab,
) -> None:
    dsl = LinkClass("dsl", delay_ms=20, jitter_ms=5)
    lab = make_lab(LabSpec(public=("lan",), homes=(HomeSpec(link="dsl"),), links=(dsl,)))
    serve(lab, "p0", PORT)
    rtts_ms = probe(lab, "h0n0", "rtt", lab.slot("p0").address, str(PORT), "--count", "40")[
        "rtts_ms"
    ]
    # Never below 2 x (20 - 5) ms; at most 2 x (20 + 5) ms plus this machine's scheduling, which
    # under load delays some echoes by far more: the lower quartile stays within the range.
    ordered = sorted(rtts_ms)
    assert ordered[0] >= 30, rtts_ms
    assert ordered[len(ordered) // 4] <= 52, rtts_ms
    assert statistics.median(rtts_ms) >= 35, rtts_ms


def test_loss_drops_the_configured_share_of_packets(make_lab: MakeLab) -> None:
    lossy = LinkClass("lossy", loss_pct=10)
    lab = make_lab(LabSpec(public=("lan",), homes=(HomeSpec(link="lossy"),), links=(lossy,)))
    serve(lab, "p0", PORT)
    result = probe(lab, "h0n0", "udp", lab.slot("p0").address, str(PORT), "--count", "1500")
    # each echo crosses the lossy link twice: 81 % expected; 6 standard deviations each side
    assert 0.75 <= result["echoed"] / result["sent"] <= 0.87, result


def test_rate_caps_throughput(make_lab: MakeLab) -> None:
    slow = LinkClass("slow", rate_kbit=4000)
    lab = make_lab(LabSpec(public=("lan",), homes=(HomeSpec(link="slow"),), links=(slow,)))
    serve(lab, "p0", PORT)
    result = probe(lab, "h0n0", "send", lab.slot("p0").address, str(PORT), "--bytes", "600000")
    assert result["answer"] == "done"
    assert 2500 <= result["kbit_per_s"] <= 4600, result


def test_partition_cuts_the_internet_between_groups_and_heal_restores_it(make_lab: MakeLab) -> None:
    lab = make_lab(LabSpec(public=("lan", "lan"), homes=(HomeSpec(),)))
    serve(lab, "p0", PORT)
    serve(lab, "p1", PORT)
    target = lab.slot("p0").address
    lab.partition([["p0"], ["p1", "h0n0"]])
    assert (
        probe(lab, "h0n0", "connect", target, str(PORT), "--timeout-s", "1")["result"] == "timeout"
    )
    same_side = probe(lab, "h0n0", "connect", lab.slot("p1").address, str(PORT))
    assert same_side["result"] == "connected"
    lab.heal()
    assert probe(lab, "h0n0", "connect", target, str(PORT))["result"] == "connected"


def test_destroy_removes_every_namespace_and_process(make_lab: MakeLab) -> None:
    lab = make_lab(LabSpec(homes=(HomeSpec(link="dsl"),), links=(LinkClass("dsl", delay_ms=5),)))
    server = serve(lab, "p0", PORT)
    helpers = [p.pid for p in lab.helpers]
    assert helpers
    lab.destroy()
    assert not [ns for ns in list_namespaces() if ns.startswith(f"hth-{lab.id}-")]
    assert server.poll() is not None
    assert all(p.poll() is not None for p in lab.helpers)
    assert not (lab_module.RECORD_DIR / f"{lab.id}.json").exists()


def test_cleanup_stale_removes_what_a_killed_owner_left() -> None:
    require_netns()
    script = (
        "import sys, time\n"
        "from hearth.testnet.netns.lab import Lab\n"
        "from hearth.testnet.netns.spec import HomeSpec, LabSpec, LinkClass\n"
        "lab = Lab.create(LabSpec(homes=(HomeSpec(link='dsl'),),"
        " links=(LinkClass('dsl', delay_ms=5),)))\n"
        "print(lab.id, flush=True)\n"
        "time.sleep(600)\n"
    )
    owner = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert owner.stdout is not None
    lab_id = owner.stdout.readline().strip()
    assert [ns for ns in list_namespaces() if ns.startswith(f"hth-{lab_id}-")]
    assert lab_id not in cleanup_stale()  # its owner still runs: not stale
    owner.kill()
    owner.wait()
    assert lab_id in cleanup_stale()
    assert not [ns for ns in list_namespaces() if ns.startswith(f"hth-{lab_id}-")]
    assert not (lab_module.RECORD_DIR / f"{lab_id}.json").exists()


def test_a_detached_lab_is_stale_once_no_node_runs_in_it(make_lab: MakeLab) -> None:
    require_netns()
    lab = Lab.create(LabSpec(homes=(HomeSpec(),)), owner_pid=None)
    try:
        server = serve(lab, "h0n0", PORT)
        assert lab.id not in cleanup_stale()
        server.kill()
        server.wait()
        assert lab.id in cleanup_stale()
    finally:
        lab.destroy()
