"""One error hierarchy; the CLI is the only place that catches it.

Each class carries the process exit code the CLI returns for it, so the mapping from
"what went wrong" to "what cron sees" lives next to the error, not in a table elsewhere.
"""

from __future__ import annotations


class ExitCode:
    """Documented process exit codes (README, "Exit codes")."""

    OK = 0
    PARTIAL = 3  # finished, but some inputs/patients could not be read or written
    USAGE = 2  # bad command line or configuration (argparse also uses 2)
    FATAL = 4  # could not run at all: server unreachable, auth failed, write-back rejected
    LOCKED = 5  # another sync run holds the lock
    INTERNAL = 70  # a bug: an unexpected exception (EX_SOFTWARE)


class AdapterError(Exception):
    """Base of every error the adapter raises on purpose."""

    exit_code = ExitCode.FATAL


class ConfigError(AdapterError):
    """A mapping, overlay, criteria or site configuration file is invalid.

    The message always names the file and the key.
    """

    exit_code = ExitCode.USAGE


class UsageError(AdapterError):
    """The command line is inconsistent (e.g. no input given)."""

    exit_code = ExitCode.USAGE


class InputError(AdapterError):
    """One input (file, NDJSON line, resource) could not be read; reported, never fatal."""

    exit_code = ExitCode.PARTIAL


class ServerError(AdapterError):
    """A FHIR server answered with an error or could not be reached after retries.

    The message is built from the method, the path without its query, the status and the
    OperationOutcome's issue severity/code only: it goes to logs, the terminal, the sync state and
    manifests. ``server_text`` is the OperationOutcome's free text (diagnostics, details.text), which
    can quote patient data; only the result file's ``errors`` (mode 0600) carry it (docs/security.md).
    """

    exit_code = ExitCode.FATAL

    def __init__(
        self,
        message: str,
        status: int | None = None,
        url: str | None = None,
        *,
        server_text: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.url = url
        self.server_text = server_text


class ServerUnreachable(ServerError):
    """No HTTP answer: connection refused, reset, timed out or TLS failed, after the retries allowed.

    At the start of a run this dooms every patient; mid-run it is one patient's failure (the pipeline
    stops only after several patients in a row fail).
    """


class OutcomeUnknown(ServerUnreachable):
    """A write was sent and no answer came back: the server may or may not have stored it."""


class DeadlineExceeded(ServerUnreachable):
    """The whole exchange (connect, headers, body) took longer than the request deadline: a server
    trickling its answer is cut off, not waited for."""


class UnsafeUrl(ServerError):
    """A URL the server handed us (a next link, a redirect, a Location, a token endpoint) is on another
    origin or is ambiguous (backslash, userinfo, control characters): refused, never requested."""


class ResponseTooLarge(ServerError):
    """A response body is larger than the configured maximum; reading stopped there."""


class OperationNotSupported(ServerError):
    """The server advertises an operation (``$everything``) but answers as if it did not exist."""


class AuthError(ServerError):
    """Authentication failed for good: the token endpoint refused us, or the FHIR server still answers
    401 after a token refresh. Every later request would fail too, so the run stops."""


class AccessDenied(ServerError):
    """HTTP 403 (or a 401 the client cannot renew credentials for) on one request: that resource or
    patient is closed to us; the others may not be."""


class PreconditionFailed(ServerError):
    """The server rejected a conditional write (HTTP 409/412): someone else changed the resource."""


class WriteBackError(AdapterError):
    """A ResearchSubject/Provenance write was rejected."""

    exit_code = ExitCode.PARTIAL


class SystemicFailure(AdapterError):
    """So many patients failed in a row that the server, not the patients, is the problem: stop."""

    exit_code = ExitCode.FATAL


class ThrottleBudgetExhausted(SystemicFailure):
    """The run has waited on 429/503 answers for longer than its throttling budget: stop, so a server
    that keeps throttling ends the run in bounded time."""


class WorkspaceError(AdapterError):
    """The adapter's own working files (the on-disk index a file screen groups patients in) cannot be
    written or read: a full disk, a read-only or vanished folder. The message names the folder."""

    exit_code = ExitCode.FATAL


class StateError(AdapterError):
    """The sync state (its SQLite file, its lock) cannot be used: damaged, of the wrong kind, unreadable.
    The message names the file; nothing is screened until an operator restores or moves it."""

    exit_code = ExitCode.FATAL


class LockedError(AdapterError):
    """Another run holds the sync lock."""

    exit_code = ExitCode.LOCKED
