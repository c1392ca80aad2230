"""``loravet api``: the HTTP API alone (compose runs it next to Redis and the workers).

    LORAVET_API_KEYS=... LORAVET_API_REDIS_URL=redis://redis:6379/0 loravet api --host 0.0.0.0 --port 8000

Settings come from ``LORAVET_API_*`` (see ``.env.example``); invalid settings print one
``error:`` line and exit with status 2 before anything listens.
"""

from __future__ import annotations

import logging
import sys

from pydantic import ValidationError

from core.cli_support import Parser, settings_error


def build_parser() -> Parser:
    p = Parser(prog="loravet api", description="Run the loravet HTTP API.")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (0.0.0.0 in a container)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument(
        "--proxy-headers", action="store_true", help="trust X-Forwarded-* from a reverse proxy"
    )
    return p


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    from service.settings import ApiSettings

    try:
        settings = ApiSettings()
    except ValidationError as exc:
        print(
            f"error: invalid API settings: {settings_error(exc, 'LORAVET_API_')}", file=sys.stderr
        )
        return 2
    import uvicorn

    from service.main import create_app

    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    config = uvicorn.Config(
        create_app(settings),
        host=args.host,
        port=args.port,
        proxy_headers=args.proxy_headers,
        log_level=settings.log_level.lower(),
    )
    # after uvicorn configured its loggers: a key a client put in a URL never reaches the log
    logging.getLogger("uvicorn.access").addFilter(RedactQueryValues())
    uvicorn.Server(config).run()
    return 0


class RedactQueryValues(logging.Filter):
    """Access-log lines show query parameter names only (``?api_key=***``).

    Keys belong in headers, but a client that puts one in the URL must not get it written to the
    server's log; values of every parameter are hidden, since any name could carry a secret.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(
                redact_query(a) if isinstance(a, str) and "?" in a else a for a in record.args
            )
        return True


def redact_query(target: str) -> str:
    path, _, query = target.partition("?")
    names = [part.split("=", 1)[0] for part in query.split("&") if part]
    return path + "?" + "&".join(f"{n}=***" for n in names)
