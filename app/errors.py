"""Domain errors, raised where a problem is found and mapped to HTTP in one place.

Every error carries a stable machine-readable ``code`` (part of the API contract),
a human ``message`` saying what is wrong, and optional structured ``details``.
The HTTP status for each class lives in ``app/api/errors.py``; nothing in the
domain packages knows about HTTP.
"""

from __future__ import annotations

from typing import Any


class ServiceError(Exception):
    """Base of every error the service reports to a caller."""

    code = "error"

    def __init__(self, message: str, *, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or {}

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "details": self.details}


# --- input (ECG files, request bodies) -------------------------------------------------


class InvalidInput(ServiceError):
    """The request is well-formed HTTP but its content cannot be used."""

    code = "invalid_input"


class UnsupportedFormat(InvalidInput):
    """The upload is not in any format the service reads."""

    code = "unsupported_format"


class MalformedFile(InvalidInput):
    """The upload claims a known format but its content is broken."""

    code = "malformed_file"


class MissingLeads(InvalidInput):
    """Standard leads are missing and cannot be derived."""

    code = "missing_leads"


class SignalTooShort(InvalidInput):
    """The recording is shorter than one model window and padding was not requested."""

    code = "signal_too_short"


class UnsupportedSignal(InvalidInput):
    """Sampling rate, units or shape outside what the service accepts."""

    code = "unsupported_signal"


class UploadTooLarge(InvalidInput):
    """An upload, archive member or decompressed size exceeds its limit."""

    code = "upload_too_large"


class UnsafeUpload(InvalidInput):
    """An upload tries to reach outside its sandbox (path traversal, links)."""

    code = "unsafe_upload"


# --- resources --------------------------------------------------------------------------


class NotFound(ServiceError):
    code = "not_found"


class Conflict(ServiceError):
    code = "conflict"


class VersionConflict(Conflict):
    """A change named a revision (``If-Match``) that is no longer the current one: someone else
    changed it in between. Nothing was changed; details carry the current revision and ETag."""

    code = "version_conflict"


class PreconditionRequired(ServiceError):
    """A change that must name the revision it replaces (``If-Match``) named none."""

    code = "precondition_required"


# --- access (API keys) -------------------------------------------------------------------


class Unauthenticated(ServiceError):
    """No API key, or one that is unknown or revoked."""

    code = "unauthenticated"


class Forbidden(ServiceError):
    """The key is valid but its scope does not allow this operation."""

    code = "forbidden"


# --- model --------------------------------------------------------------------------------


class ModelNotReady(ServiceError):
    code = "model_not_ready"


class ModelNotLoaded(Conflict):
    """A request pinned a model version that is in the store but not loaded in this service."""

    code = "model_not_loaded"


class ModelUnusable(Conflict):
    """A model version that cannot be activated: its bundle fails its checks or cannot load."""

    code = "model_unusable"


class CheckpointError(ServiceError):
    """A checkpoint file cannot be used; the message names the problem."""

    code = "checkpoint_invalid"


class BundleError(ServiceError):
    """A model bundle directory is missing, incomplete or inconsistent."""

    code = "bundle_invalid"


class FetchError(ServiceError):
    """Downloading weights or tokenizer files failed."""

    code = "fetch_failed"


# --- overload (bounded work overall) ---------------------------------------------------


class Overloaded(ServiceError):
    """The service has as much work queued as it may hold; the caller should retry later.

    ``retry_after_s`` becomes the ``Retry-After`` header of the 503."""

    code = "overloaded"

    def __init__(self, message: str, *, retry_after_s: int = 1, details: dict[str, Any] | None = None) -> None:
        super().__init__(message, details=details)
        self.retry_after_s = max(1, int(retry_after_s))


class DeadlineExceeded(Overloaded):
    """The request waited past its deadline (ECGFM_REQUEST_DEADLINE_S) and was not scored."""

    code = "deadline_exceeded"


class ShuttingDown(Overloaded):
    """The process is draining for shutdown (SIGTERM) and takes no new work."""

    code = "shutting_down"


# --- database (degrade, don't fail, when the database does) ---------------------------------


class DatabaseUnavailable(ServiceError):
    """The knowledge database cannot be reached, or did not answer within its timeout.

    ``retry_after_s`` becomes the ``Retry-After`` header of the 503."""

    code = "database_unavailable"

    def __init__(self, message: str, *, retry_after_s: int = 5, details: dict[str, Any] | None = None) -> None:
        super().__init__(message, details=details)
        self.retry_after_s = max(1, int(retry_after_s))
