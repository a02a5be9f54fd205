"""Honest failure reporting on real node processes (ADR 0023).

A job that fails the same way on every replica is a verified result: the developer gets its
error kind, exit code and stderr from the CLI and the SDK. A job that cannot run says why, with
the fix, within 5 s of the publisher knowing: a runtime no host offers, a max price below every
host's, hosts all in one network group.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hearth import Client, JobFailed, JobOptions
from hearth.node.config import TEMPLATE
from hearth.testnet import launch
from tests.e2e.network import ECHO, ROOT, config, hearth, start

pytestmark = pytest.mark.integration

MODULES = Path(__file__).parent / "modules"
FAILS = MODULES / "fails.wat"  # stderr "...ValueError: bad input line 3", exit status 1
TRAPS = MODULES / "traps.wat"  # stderr "about to fail", then unreachable
SPIN = ROOT / "node" / "sandbox" / "modules" / "spin.wat"  # loops until the fuel runs out
CAUSE_S_MAX = 5.0  # a cause reaches the developer within this of being knowable


@pytest.fixture(scope="module")
def three(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[launch.LaunchedNode]]:
    """Three hosts, each its own network group (/32 on loopback), wasm only."""
    nodes = start(tmp_path_factory.mktemp("three"), [config(60 + 10 * i) for i in range(3)])
    try:
        yield nodes
    finally:
        launch.stop(nodes)


def _cause_within(client: Client, module: Path, **options: object) -> tuple[dict, float]:  # type: ignore[type-arg]
    """Publish; return the first event that names a cause and the seconds it took."""
    started = time.monotonic()
    job_id = client.submit(module, b"", JobOptions(**options))  # type: ignore[arg-type]
    for event in client.events(job_id):
        if event.get("cause"):
            return event, time.monotonic() - started
    raise AssertionError(f"job {job_id} ended without a cause: {client.job(job_id)}")


def test_a_job_that_fails_gives_exit_code_and_stderr_in_the_sdk(three) -> None:  # type: ignore[no-untyped-def]
    with Client(three[0].home) as client:
        result = client.run(FAILS, b"", replicas=2)
    assert result.verified and not result.ok
    assert result.error_kind == "exit" and result.exit_code == 1
    assert "ValueError: bad input line 3" in result.stderr
    assert result.cli_exit_code == 10
    assert result.paid_mc > 0  # the workers did the work and agreed: they are paid (ADR 0023)
    with pytest.raises(JobFailed, match="exit code 1") as raised:
        result.check()
    assert raised.value.result is result


def test_a_job_that_fails_gives_exit_code_and_stderr_on_the_cli(three, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    output = tmp_path / "out.bin"
    run = hearth(three[1].home, "job", "run", str(FAILS), "--output", str(output))
    assert run.returncode == 10, run.stderr
    assert "ValueError: bad input line 3" in run.stderr
    last = run.stderr.strip().splitlines()[-1]
    assert last.startswith("hearth: job ") and "exit, exit code 1" in last, run.stderr
    assert "no such blob" not in run.stderr and not output.exists()
    as_json = hearth(three[1].home, "job", "run", str(TRAPS), "--output", str(output), "--json")
    assert as_json.returncode == 11, as_json.stderr
    report = json.loads(as_json.stdout)
    assert report["state"] == "job-failed" and report["error_kind"] == "trap"
    assert report["exit_code"] == -1 and "about to fail" in report["stderr"]
    shown = hearth(three[1].home, "job", "show", report["job_id"])
    assert shown.returncode == 0, shown.stderr
    assert "the job failed: trap, exit code -1" in shown.stdout and "about to fail" in shown.stdout


def test_out_of_fuel_has_its_own_exit_code(three, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    run = hearth(
        three[2].home, "job", "run", str(SPIN), "--output", str(tmp_path / "o"), "--fuel", "1000000"
    )
    assert run.returncode == 12, run.stderr
    assert "out-of-fuel" in run.stderr.splitlines()[-1]


def test_a_runtime_no_host_offers_is_named_at_once(three, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    job = tmp_path / "job.py"
    job.write_text("print('hi')\n")
    with Client(three[0].home) as client:
        event, took_s = _cause_within(client, job, bid_window_ms=1_000)
    assert event["cause"] == "no-runtime" and event["phase"] == "failed"
    assert "python runtime" in event["detail"] and "runtimes" in event["detail"]
    assert took_s < CAUSE_S_MAX, took_s


def test_a_max_price_below_every_host_says_how_far_to_raise_it(three) -> None:  # type: ignore[no-untyped-def]
    with Client(three[1].home) as client:
        event, took_s = _cause_within(client, ECHO, max_price_mc_per_tfuel=0)
    assert event["cause"] == "price" and event["phase"] == "failed"
    assert "raise --max-price to at least" in event["detail"]
    assert took_s < CAUSE_S_MAX, took_s


def test_the_cli_names_the_cause_and_exits_16(three, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    run = hearth(
        three[2].home, "job", "run", str(ECHO), "--output", str(tmp_path / "o"), "--max-price", "0"
    )
    assert run.returncode == 16, run.stderr
    assert "[price]" in run.stderr and "raise --max-price" in run.stderr


def test_hosts_in_one_network_group_are_named_with_the_fix(tmp_path: Path) -> None:
    # The default /24 groups: every loopback node is in 127.0.0.0/24.
    one_group = TEMPLATE.replace('runtimes = ["wasm", "python"]', 'runtimes = ["wasm"]')
    nodes = start(tmp_path, [one_group] * 3)
    try:
        with Client(nodes[0].home) as client:
            event, took_s = _cause_within(client, ECHO, replicas=2)
    finally:
        launch.stop(nodes)
    assert event["cause"] == "one-network-group", event
    assert "network_group_prefix_v4 = 32" in event["detail"]
    assert took_s < CAUSE_S_MAX, took_s
