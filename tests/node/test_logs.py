"""node.log rotates by size, and a log write the disk refuses is remembered, never raised."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from hearth.node import logs
from hearth.node.commands.common import CommandError
from hearth.node.config import parse
from hearth.node.logs import LOG_FILES_KEPT, LOGGER_NAME, NodeLogFile
from tests.diskfull import fill, free, small_disk


@pytest.fixture
def restore_logger() -> Iterator[None]:
    logger = logging.getLogger(LOGGER_NAME)
    saved = list(logger.handlers), logger.level
    try:
        yield
    finally:
        for handler in logger.handlers:
            handler.close()
        logger.handlers[:] = saved[0]
        logger.setLevel(saved[1])


def test_node_log_rotates_by_size_and_keeps_three_old_files(
    tmp_path: Path, restore_logger: None
) -> None:
    logs.setup(tmp_path, bytes_max=4096)
    for i in range(2000):
        logs.log("warning", "message-dropped", peer=f"peer-{i}", reason="malformed")
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["node.log", *(f"node.log.{n}" for n in range(1, LOG_FILES_KEPT + 1))]
    assert all(p.stat().st_size <= 4096 for p in tmp_path.iterdir())
    assert '"peer-1999"' in (tmp_path / "node.log").read_text()


def test_a_full_disk_under_the_log_is_remembered_not_raised(restore_logger: None) -> None:
    handler = NodeLogFile(Path("/dev/full"), bytes_max=1 << 20)  # every write: ENOSPC
    logger = logging.getLogger(LOGGER_NAME)
    logger.handlers[:] = [handler]
    logger.setLevel(logging.INFO)
    logs.log("info", "a-line")
    assert logs.file_failure() is not None and "No space left" in logs.file_failure()  # type: ignore[operator]
    handler.baseFilename = "/dev/null"  # space came back
    logs.log("info", "another-line")
    assert logs.file_failure() is None


def test_log_mb_is_configurable_and_checked() -> None:
    assert parse("").log_mb == 10
    assert parse("[limits]\nlog_mb = 2\n").log_mb == 2
    with pytest.raises(CommandError, match=r"limits\.log_mb"):
        parse("[limits]\nlog_mb = 0\n")


def test_a_line_the_disk_cuts_short_is_cut_off_so_the_log_holds_whole_lines(
    tmp_path: Path, restore_logger: None
) -> None:
    with small_disk(tmp_path / "disk", size_mb=1) as disk:
        logs.setup(disk)
        logs.log("info", "first")  # its page has room for a few thousand bytes more
        filler = fill(disk)
        logs.log("info", "too-long-for-the-page", padding="p" * 10_000)
        assert "a short write, cut off" in (logs.file_failure() or "")
        free(filler)
        logs.probe_file()
        logs.log("info", "after")
        assert logs.file_failure() is None
        lines = (disk / "node.log").read_text().splitlines()
        assert [json.loads(line)["event"] for line in lines] == ["first", "after"]
        for handler in logging.getLogger(LOGGER_NAME).handlers:
            handler.close()
