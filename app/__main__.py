"""`python -m app`: serve on HOST:PORT (default 0.0.0.0:8000) with uvicorn, logging JSON lines.

On SIGTERM (or Ctrl-C) the server stops accepting connections, lets requests in flight finish for
up to SHUTDOWN_GRACE_S seconds, then exits. When no model can be loaded it logs one line naming the
file and the reason, and exits with status 1 (unless EXIT_ON_LOAD_ERROR=false).
"""

from __future__ import annotations

import json
import logging
import sys

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
    # When no model loads, the app asks the server (created just below) to stop.
    app = create_app(settings, on_load_failure=lambda: setattr(server, "should_exit", True))
    # uvicorn's own access log would duplicate app.access; its other loggers go through our handler.
    server = uvicorn.Server(uvicorn.Config(
        app, host=settings.host, port=settings.port, log_config=None, access_log=False,
        timeout_graceful_shutdown=settings.shutdown_grace_s,
    ))
    server.run()  # after a SIGTERM, uvicorn raises it again once drained: the process ends by that signal
    if app.state.translator.problem and settings.exit_on_load_error:
        sys.exit(1)


if __name__ == "__main__":
    main()
