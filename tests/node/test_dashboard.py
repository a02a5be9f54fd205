"""The dashboard's sessions (cookie, CSRF, origin) and settings (tomlkit, validation), no server."""

from __future__ import annotations

from pathlib import Path

import pytest

import hearth.node.config
from hearth.node.config import TEMPLATE
from hearth.node.dashboard import settings
from hearth.node.dashboard.session import LOGIN_CODE_MS_MAX, SESSIONS_MAX, Sessions

PORT = 4242
ORIGIN = f"http://127.0.0.1:{PORT}"


class Clock:
    def __init__(self) -> None:
        self.ms = 1_000_000

    def __call__(self) -> int:
        return self.ms


def make() -> tuple[Sessions, Clock]:
    clock = Clock()
    sessions = Sessions("secret-token", clock)
    sessions.port = PORT
    return sessions, clock


def headers(session_id: str, **extra: str) -> dict[bytes, bytes]:
    out = {b"cookie": f"hearth_session_{PORT}={session_id}".encode(), b"host": b"127.0.0.1:4242"}
    out |= {k.replace("_", "-").encode(): v.encode() for k, v in extra.items()}
    return out


def test_a_session_reads_freely_and_writes_only_with_csrf_and_its_own_origin() -> None:
    sessions, _ = make()
    session_id, session = sessions.open()
    assert sessions.refusal("GET", headers(session_id)) is None
    assert sessions.refusal("POST", headers(session_id))[0] == 403  # type: ignore[index]
    no_csrf = sessions.refusal("POST", headers(session_id, origin=ORIGIN))
    assert no_csrf is not None and "CSRF" in no_csrf[1]
    cross = sessions.refusal(
        "POST", headers(session_id, origin="http://evil", x_csrf_token=session.csrf)
    )
    assert cross is not None and "cross-origin" in cross[1]
    ok = sessions.refusal("POST", headers(session_id, origin=ORIGIN, x_csrf_token=session.csrf))
    assert ok is None
    other_port = headers(session_id, origin=ORIGIN, x_csrf_token=session.csrf)
    other_port[b"host"] = b"127.0.0.1:9999"
    assert sessions.refusal("POST", other_port) == (
        403,
        "the Host header does not name this node's dashboard",
    )


def test_no_wrong_or_malformed_cookie_is_not_logged_in() -> None:
    sessions, _ = make()
    sessions.open()
    assert sessions.refusal("GET", {b"host": b"127.0.0.1:4242"})[0] == 401  # type: ignore[index]
    assert sessions.refusal("GET", headers("forged"))[0] == 401  # type: ignore[index]
    assert sessions.refusal("GET", {b"cookie": b'\x00"=;;"', b"host": b"x"})[0] == 401  # type: ignore[index]


def test_sessions_and_login_codes_expire_and_are_bounded() -> None:
    sessions, clock = make()
    code = sessions.new_login_code()
    assert sessions.use_login_code(code)
    assert not sessions.use_login_code(code)  # once only
    late = sessions.new_login_code()
    clock.ms += LOGIN_CODE_MS_MAX + 1
    assert not sessions.use_login_code(late)
    first, _ = sessions.open()
    for _ in range(SESSIONS_MAX):
        sessions.open()
    assert sessions.refusal("GET", headers(first))[0] == 401  # type: ignore[index]
    assert sessions.token_ok("secret-token") and not sessions.token_ok("secret-tokex")


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "config.toml").write_text(TEMPLATE)
    monkeypatch.setattr(hearth.node.config, "machine_cores", lambda: 4)
    return tmp_path


def test_a_save_rewrites_only_what_changed_and_keeps_the_comments(home: Path) -> None:
    form = {k: v for k, v in settings.read(home).items() if k != "cores_max"}  # as the page sends
    config, saved = settings.apply(home, form | {"cores": 3})
    assert config.cores == 3 and saved["cores"] == 3
    assert (home / "config.toml").read_text() == TEMPLATE.replace("cores = 1\n", "cores = 3\n")


def test_a_save_takes_tables_and_lists(home: Path) -> None:
    config, saved = settings.apply(
        home, {"tariff_hours": {"18-22": 50}, "solar_surplus_hours": [11, 12], "source": "solar"}
    )
    text = (home / "config.toml").read_text()
    assert "tariff_hours = {18-22 = 50}" in text or 'tariff_hours = {"18-22" = 50}' in text
    assert config.pricing.solar_surplus_hours == frozenset({11, 12})
    assert config.energy_source == "solar" and saved["source"] == "solar"
    assert "# Local hours when solar surplus makes energy free" in text


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"tariff_per_kwh": -1.0}, "must not be negative"),
        ({"cores": 10_000}, "10000 is more than this machine's 4 cores"),
        ({"cores": 0}, "cores must be at least 1"),
        ({"cores": True}, "cores: expected int"),
        ({"memory_mb": "lots"}, "memory_mb: expected int"),
        ({"source": "coal"}, "energy.source"),
        ({"availability_hours": ["25-26"]}, "availability.hours"),
        ({"root": 1}, "unknown settings: root"),
        ({}, "send a JSON object"),
        ([1, 2], "send a JSON object"),
    ],
)
def test_a_bad_setting_says_why_and_changes_nothing(
    home: Path, changes: object, message: str
) -> None:
    with pytest.raises(settings.SettingsError, match=message):
        settings.apply(home, changes)
    assert (home / "config.toml").read_text() == TEMPLATE
    assert not (home / "config.toml.partial").exists()
