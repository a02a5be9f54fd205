"""The job body of POST /v1/jobs: the lease a developer may set, validated before the engine."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from hearth.client import JobOptions
from hearth.node.commands.job_network import options_from
from hearth.node.routes import parse_job_body


def _body(**changes: Any) -> dict[str, Any]:
    options = dataclasses.replace(JobOptions(deadline_s=60), **changes)
    return options.body("ab" * 32, "cd" * 32, "wasm")


def test_the_sdk_default_derives_the_lease() -> None:
    assert _body()["lease_s"] is None
    assert parse_job_body(_body())["lease_s"] == 0  # 0: derived from the job by the publisher


def test_an_older_client_without_a_lease_is_still_accepted() -> None:
    body = _body()
    del body["lease_s"]
    assert parse_job_body(body)["lease_s"] == 0


@pytest.mark.parametrize("lease_s", [1, 30, 60])
def test_a_lease_within_the_deadline_is_kept(lease_s: int) -> None:
    assert parse_job_body(_body(lease_s=lease_s))["lease_s"] == lease_s


@pytest.mark.parametrize("lease_s", [-1, 61, 10**9, True, "5", 2.5])
def test_a_lease_outside_the_deadline_or_not_whole_seconds_is_refused(lease_s: Any) -> None:
    with pytest.raises(ValueError, match="lease_s"):
        parse_job_body(_body(lease_s=lease_s))


def test_the_cli_flag_and_the_spec_file_carry_the_lease() -> None:
    assert options_from({"lease_s": 7}, {"lease_s": None}).lease_s == 7  # from the spec file
    assert options_from({"lease_s": 7}, {"lease_s": 9}).lease_s == 9  # --lease wins
    assert options_from({}, {}).lease_s is None  # derived


def test_verify_defaults_to_always_2_and_takes_adaptive() -> None:
    assert parse_job_body(_body())["verify"] == "always-2"
    assert parse_job_body(_body(verify="adaptive"))["verify"] == "adaptive"
    assert options_from({}, {"verify": "adaptive"}).verify == "adaptive"


@pytest.mark.parametrize("verify", ["always-3", "ADAPTIVE", 2, ["adaptive"]])
def test_an_unknown_verify_policy_is_one_clear_error(verify: object) -> None:
    with pytest.raises(ValueError, match="verify must be one of"):
        parse_job_body(_body(verify=verify))


@pytest.mark.parametrize("job_id", ["ab" * 16, "00" * 8])
def test_a_caller_may_choose_the_job_id(job_id: str) -> None:
    assert parse_job_body({**_body(), "job_id": job_id})["job_id"] == bytes.fromhex(job_id)
    assert parse_job_body(_body())["job_id"] is None


@pytest.mark.parametrize("job_id", ["ab", "zz" * 16, "ab" * 70, 5])
def test_a_job_id_that_is_not_8_to_64_hex_bytes_is_refused(job_id: Any) -> None:
    with pytest.raises(ValueError, match="job_id"):
        parse_job_body({**_body(), "job_id": job_id})
