"""`python -m app`: serve on HOST:PORT (default 0.0.0.0:8000) with uvicorn, logging JSON lines."""

from __future__ import annotations

import json
import logging

import uvicorn

from app.main import create_app
from app.settings import Settings


class JsonLines(logging.Formatter):
    """One JSON object per line; access lines are JSON already and are passed through."""

    def format(self, record: logging.LogRecord) -> str:
        if record.name == "app.access":
            return record.getMessage()
        line = {"time": self.formatTime(record), "level": record.levelname, "logger": record.name,
                "message": record.getMessage()}
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False)


def main() -> None:
    settings = Settings()
    handler = logging.StreamHandler()
    handler.setFormatter(JsonLines())
    logging.basicConfig(level=settings.log_level.upper(), handlers=[handler], force=True)
    # uvicorn's own access log would duplicate app.access; its other loggers go through our handler.
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_config=None, access_log=False)


if __name__ == "__main__":
    main()
