"""Structured logs: one JSON object per line, to stderr and to ``node.log`` in the data dir.

``node.log`` rotates by size (``[limits] log_mb``, ``LOG_FILES_KEPT`` old files kept), so a peer
that makes the node log a line per message cannot fill the disk. A write that fails (a full disk)
never raises into the node: the file handler remembers why in ``file_failure`` (the node reports
it as degraded) and tries again with the next line. ``LogLimiter`` turns a burst of one kind of
line into a few lines and a count.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import logging
import logging.handlers
import os
import sys
import time
from pathlib import Path
from typing import Any

LOGGER_NAME = "hearth"
LOG_FILE_NAME = "node.log"
LOG_BYTES_MAX_DEFAULT = 10 * 1024 * 1024
LOG_FILES_KEPT = 3  # node.log.1 .. node.log.3 besides node.log
LINES_PER_WINDOW_MAX = 10
LINE_WINDOW_S = 10.0
PROBE_FREE_BYTES_MIN = 64 * 1024  # room for many lines: the log may be written again


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts_ms": int(record.created * 1000),
            "level": record.levelname.lower(),
            "event": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            entry.update(fields)
        if record.exc_info:
            entry["traceback"] = self.formatException(record.exc_info)
        return json.dumps(entry, sort_keys=True, default=str)


class NodeLogFile(logging.handlers.RotatingFileHandler):
    """``node.log``, rotated by size; whole lines only; a failed write is remembered, not raised.

    Each line is one unbuffered append; a short write (the disk filled mid-line) is cut back off,
    so a reader never meets half a line, and the next line starts on a line of its own.
    """

    def __init__(self, path: Path, bytes_max: int) -> None:
        super().__init__(path, maxBytes=bytes_max, backupCount=LOG_FILES_KEPT, delay=True)
        self.file_failure: str | None = None

    def _open(self) -> Any:
        return open(self.baseFilename, "ab", buffering=0)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            if self.shouldRollover(record):
                self.doRollover()
            if self.stream is None:
                self.stream = self._open()
            _append_whole(self.stream, (self.format(record) + "\n").encode())
        except Exception:
            self.handleError(record)
            return
        self.file_failure = None

    def handleError(self, record: logging.LogRecord) -> None:
        self.file_failure = f"{LOG_FILE_NAME}: {sys.exc_info()[1]}"
        stream, self.stream = self.stream, None  # reopened for the next line
        if stream is not None:
            with contextlib.suppress(OSError):
                stream.close()

    def probe(self) -> None:
        """Clear ``file_failure`` once the log's folder has room again (the next line tells)."""
        if self.file_failure is None:
            return
        try:
            stats = os.statvfs(Path(self.baseFilename).parent)
        except OSError:
            return
        if stats.f_bavail * stats.f_frsize >= PROBE_FREE_BYTES_MIN:
            self.file_failure = None


def _append_whole(stream: Any, line: bytes) -> None:
    start = stream.seek(0, os.SEEK_END)
    written = stream.write(line)
    if written != len(line):
        stream.truncate(start)
        raise OSError(errno.ENOSPC, f"{os.strerror(errno.ENOSPC)} (a short write, cut off)")


def setup(
    home: Path | None, level: str = "info", bytes_max: int = LOG_BYTES_MAX_DEFAULT
) -> logging.Logger:
    logger = logging.getLogger(LOGGER_NAME)
    logger.handlers.clear()
    logger.setLevel(level.upper())
    logger.propagate = False
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if home is not None:
        handlers.append(NodeLogFile(home / LOG_FILE_NAME, bytes_max))
    for handler in handlers:
        handler.setFormatter(JsonFormatter())
        logger.addHandler(handler)
    logging.Formatter.converter = time.gmtime
    return logger


def file_failure() -> str | None:
    """Why the last write to ``node.log`` failed, or None if it succeeded (or there is none)."""
    for handler in logging.getLogger(LOGGER_NAME).handlers:
        if isinstance(handler, NodeLogFile) and handler.file_failure:
            return handler.file_failure
    return None


def probe_file() -> None:
    for handler in logging.getLogger(LOGGER_NAME).handlers:
        if isinstance(handler, NodeLogFile):
            handler.probe()


def log(level: str, event: str, *, exc_info: BaseException | None = None, **fields: Any) -> None:
    logging.getLogger(LOGGER_NAME).log(
        logging.getLevelName(level.upper()), event, extra={"fields": fields}, exc_info=exc_info
    )


@dataclasses.dataclass
class _Window:
    start_s: float
    lines: int = 0
    suppressed: int = 0


class LogLimiter:
    """At most ``lines_max`` lines per key per ``window_s``; the rest are counted and summarised.

    ``log(key, now_s, ...)`` writes the line if the key has had fewer than ``lines_max`` in its
    window; ``flush(now_s)`` writes one ``log-lines-suppressed`` line with the count for each key
    whose window has passed with lines dropped, and forgets it. Keys are event names and reasons.
    """

    def __init__(
        self, lines_max: int = LINES_PER_WINDOW_MAX, window_s: float = LINE_WINDOW_S
    ) -> None:
        self.lines_max = lines_max
        self.window_s = window_s
        self._windows: dict[str, _Window] = {}

    def allow(self, key: str, now_s: float) -> bool:
        window = self._windows.get(key)
        if window is None or now_s - window.start_s >= self.window_s:
            if window is not None and window.suppressed:
                _summarise(key, window.suppressed)
            window = self._windows[key] = _Window(now_s)
        if window.lines < self.lines_max:
            window.lines += 1
            return True
        window.suppressed += 1
        return False

    def log(self, key: str, now_s: float, level: str, event: str, **fields: Any) -> None:
        if self.allow(key, now_s):
            log(level, event, **fields)

    def flush(self, now_s: float) -> int:
        """Summarise and forget the windows that have passed; return how many lines they dropped."""
        dropped = 0
        for key, window in sorted(self._windows.items()):
            if now_s - window.start_s >= self.window_s:
                del self._windows[key]
                if window.suppressed:
                    _summarise(key, window.suppressed)
                    dropped += window.suppressed
        return dropped


def _summarise(key: str, count: int) -> None:
    log("warning", "log-lines-suppressed", key=key, count=count)
