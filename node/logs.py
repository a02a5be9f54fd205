"""Structured logs: one JSON object per line, to stderr and to ``node.log`` in the data dir."""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

LOGGER_NAME = "hearth"


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
        return json.dumps(entry, sort_keys=True, default=str)


def setup(home: Path | None, level: str = "info") -> logging.Logger:
    logger = logging.getLogger(LOGGER_NAME)
    logger.handlers.clear()
    logger.setLevel(level.upper())
    logger.propagate = False
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if home is not None:
        handlers.append(logging.FileHandler(home / "node.log"))
    for handler in handlers:
        handler.setFormatter(JsonFormatter())
        logger.addHandler(handler)
    logging.Formatter.converter = time.gmtime
    return logger


def log(level: str, event: str, **fields: Any) -> None:
    logging.getLogger(LOGGER_NAME).log(
        logging.getLevelName(level.upper()), event, extra={"fields": fields}
    )
