"""What can go wrong, as one line and an exit code that means something.

Both transports report a failed call as an ApiError carrying its gRPC status
code (the gateway's error body carries it too, as a number), so the exit code
is the same whichever way the CLI talks to the mesh.
"""

from __future__ import annotations

from enum import IntEnum

from google.rpc import code_pb2

from sagemesh_sdk.busy import Busy


class ExitCode(IntEnum):
    OK = 0
    FAILED = 1  # anything else, including some files of an upload failing
    USAGE = 2  # the command line or the request was wrong (also click's code for usage errors)
    NOT_FOUND = 3  # no such knowledge base, document or conversation
    AUTH = 4  # not logged in, wrong password, token expired or refused, not allowed
    CONFLICT = 5  # already exists (a knowledge base name, an email)
    UNAVAILABLE = 6  # the server cannot be reached, is down, busy or rate-limiting: try again
    INTERRUPTED = 130  # Ctrl-C, as shells count it


# Shown by `sagemesh --help`.
EXIT_CODES_HELP = (
    "Exit codes: 0 ok, 1 failed, 2 usage or invalid request, 3 not found, "
    "4 not logged in or not allowed, 5 already exists, 6 server unreachable or busy, 130 interrupted."
)

_EXIT_BY_CODE = {
    "INVALID_ARGUMENT": ExitCode.USAGE,
    "FAILED_PRECONDITION": ExitCode.USAGE,
    "OUT_OF_RANGE": ExitCode.USAGE,
    "NOT_FOUND": ExitCode.NOT_FOUND,
    "UNAUTHENTICATED": ExitCode.AUTH,
    "PERMISSION_DENIED": ExitCode.AUTH,
    "ALREADY_EXISTS": ExitCode.CONFLICT,
    "ABORTED": ExitCode.CONFLICT,
    "UNAVAILABLE": ExitCode.UNAVAILABLE,
    "DEADLINE_EXCEEDED": ExitCode.UNAVAILABLE,
    "RESOURCE_EXHAUSTED": ExitCode.UNAVAILABLE,
}


class CliError(Exception):
    """A failure to report as `error: <message> (<where it came from>)` and exit."""

    def __init__(self, message: str, exit_code: ExitCode = ExitCode.FAILED, origin: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code
        self.origin = origin

    def line(self) -> str:
        return f"error: {self.message}" + (f" ({self.origin})" if self.origin else "")


class ApiError(CliError):
    """A call the mesh refused or could not serve. `code` is the gRPC status
    code's name; `origin` what the user saw it as ("HTTP 404", "NOT_FOUND");
    `busy` when the mesh refused it for being busy (a rate limit, load shed),
    so that it is worth making again later."""

    def __init__(self, message: str, code: str, origin: str = "", busy: Busy | None = None) -> None:
        super().__init__(message, _EXIT_BY_CODE.get(code, ExitCode.FAILED), origin or code)
        self.code = code
        self.busy = busy


def busy_of(error: Exception) -> Busy | None:
    return error.busy if isinstance(error, ApiError) else None


def code_name(number: int) -> str:
    """The name of a numeric gRPC status code, as google.rpc.Status carries it."""
    try:
        return code_pb2.Code.Name(number)
    except ValueError:
        return "UNKNOWN"


def not_logged_in() -> CliError:
    return CliError("not logged in: run `sagemesh login` (or pass --token)", ExitCode.AUTH)
