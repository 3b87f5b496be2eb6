"""What every command shares: exit codes, `fail`, argument checks."""

from __future__ import annotations

import functools
import json
import logging
import uuid
from collections.abc import Callable
from typing import NoReturn

import click
import typer

EXIT_OK, EXIT_FAILED, EXIT_REJECTED = 0, 1, 2


def fail(code: str, message: str, exit_code: int = EXIT_REJECTED, document: dict | None = None) -> NoReturn:
    """One line `error: CODE: message` on stderr (and `document` on stdout for --json), then exit.

    exit 2: bad input or settings; exit 1: anything else that failed.
    """
    from vibeinsight.logs import cli_error

    cli_error(code, message)  # a JSON line under LOG_FORMAT=json
    if document is not None:
        print(json.dumps(document, ensure_ascii=False))
    raise typer.Exit(exit_code)


def is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


def guarded(command: Callable) -> Callable:
    """Run a command so that no traceback reaches the user: every exception becomes one `fail` line.

    Bad settings (a malformed VIBEINSIGHT_* value, an unknown status URL scheme, a missing plans
    file) exit 2 as `invalid_setting`; a rejected input exits 2 with its code; a service that does
    not answer exits 1 as `unavailable`; anything else exits 1 as `internal`. The traceback goes
    to the log (LOG_LEVEL=DEBUG shows it)."""

    @functools.wraps(command)
    def run(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except (typer.Exit, click.exceptions.Exit, click.ClickException, click.Abort, SystemExit):
            raise
        except KeyboardInterrupt:
            fail("interrupted", "stopped by the user", EXIT_FAILED)
        except Exception as exc:  # noqa: BLE001 - the one place exceptions become an error line
            logging.getLogger("vibeinsight.cli").debug("command failed", exc_info=True)
            code, message, exit_code = describe(exc)
            fail(code, message, exit_code)

    return run


def describe(exc: BaseException) -> tuple[str, str, int]:
    """(code, one-line message, exit code) for an exception a command let through."""
    from pydantic import ValidationError

    from vibeinsight.errors import InputRejected, PipelineError

    if isinstance(exc, ValidationError):
        return "invalid_setting", setting_errors(exc), EXIT_REJECTED
    if type(exc).__name__ == "SettingsError":  # blocks.registry.SettingsError, without importing blocks here
        return "invalid_setting", _line(exc), EXIT_REJECTED
    if isinstance(exc, PipelineError):
        return exc.code, _line(exc.message), EXIT_REJECTED if isinstance(exc, InputRejected) else EXIT_FAILED
    if type(exc).__name__ in ("NoCredentialsError", "PartialCredentialsError"):  # botocore
        return "no_credentials", "no storage credentials: set FLY_S3_ACCESS_KEY_ID and FLY_S3_SECRET_ACCESS_KEY " \
                                 "(or AWS_ROLE_ARN with AWS_WEB_IDENTITY_TOKEN_FILE)", EXIT_REJECTED
    if _is_unavailable(exc):
        return "unavailable", f"a service did not answer: {_line(exc)}", EXIT_FAILED
    return "internal", f"{type(exc).__name__}: {_line(exc)}", EXIT_FAILED


def setting_errors(exc) -> str:
    """A pydantic ValidationError of the settings as `NAME: problem (got VALUE)`, joined by '; '."""
    from vibeinsight.settings import env_name

    parts = []
    for err in exc.errors():
        name = env_name(exc.title, [str(x) for x in err.get("loc", ())])
        got = err.get("input")
        parts.append(f"{name}: {err.get('msg', 'invalid')}" + (f" (got {got!r})" if isinstance(got, str) else ""))
    return "; ".join(parts) or _line(exc)


def _is_unavailable(exc: BaseException) -> bool:
    names = {t.__name__ for t in type(exc).__mro__}
    return bool(names & {"ConnectionError", "TimeoutError", "OperationalError", "ConnectError", "EndpointConnectionError",
                         "ConnectTimeout", "ReadTimeout", "HTTPError"})


def _line(exc: object) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:300]


def guard_app(app: typer.Typer) -> typer.Typer:
    """Wrap every command of app and of its sub-apps with `guarded`."""
    for info in app.registered_commands:
        if info.callback is not None and not getattr(info.callback, "__wrapped__", None):
            info.callback = guarded(info.callback)
    for group in app.registered_groups:
        if group.typer_instance is not None:
            guard_app(group.typer_instance)
    return app
