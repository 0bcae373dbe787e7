"""The library logs through the standard ``logging`` module; under lmms-eval, show it the way lmms-eval shows its own
messages (loguru), INFO included (the answer cache summary, failures, warnings about data)."""

from __future__ import annotations

import logging

from loguru import logger


class _ToLoguru(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        try:
            level = logger.level(record.levelname).name
        except ValueError:
            level = record.levelno
        logger.opt(depth=6, exception=record.exc_info).log(level, record.getMessage())


def route_library_logs() -> None:
    """Forward the ``lmms_futuremask`` loggers to loguru at INFO (idempotent; records still propagate)."""
    library = logging.getLogger("lmms_futuremask")
    if not any(isinstance(h, _ToLoguru) for h in library.handlers):
        library.addHandler(_ToLoguru())
        library.setLevel(logging.INFO)
