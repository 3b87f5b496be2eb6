"""What operators read: the log lines of the `vibeinsight` loggers, formatted as on a Machine (JSON,
secrets masked by vibeinsight.logs), captured in the test's process."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager


class _Lines(logging.Handler):
    def __init__(self) -> None:
        from vibeinsight.logs import JsonFormatter

        super().__init__(logging.INFO)
        self.lines: list[dict] = []
        self.setFormatter(JsonFormatter())

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(json.loads(self.format(record)))


@contextmanager
def operator_log(name: str = "vibeinsight") -> Iterator[list[dict]]:
    """The JSON lines `name`'s loggers write while the block runs."""
    logger, handler = logging.getLogger(name), _Lines()
    logger.addHandler(handler)
    try:
        yield handler.lines
    finally:
        logger.removeHandler(handler)


def messages(lines: list[dict]) -> str:
    return "\n".join(line["msg"] for line in lines)
