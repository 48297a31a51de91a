"""Domain errors. They carry meaning, never transport codes: entrypoints map them."""

from __future__ import annotations


class DomainError(Exception):
    """Base of every error the domain and its ports may raise on purpose."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidJobSpec(DomainError):
    """The request describes a job that cannot be run as given."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field


class InvalidFields(DomainError):
    """Several fields are missing or malformed (pfcon's bundled parser error)."""

    def __init__(self, problems: dict[str, str]) -> None:
        super().__init__("; ".join(f"{k}: {v}" for k, v in problems.items()))
        self.problems = dict(problems)


class InvalidInputData(DomainError):
    """The job's input data (zip, input dirs, links) is unusable."""


class InputTooLarge(InvalidInputData):
    """The job's input exceeds the configured limits."""


class JobNotFound(DomainError):
    def __init__(self, jid: str, detail: str | None = None) -> None:
        super().__init__(detail or f"job '{jid}' not found")
        self.jid = jid


class OutputNotFound(DomainError):
    """A requested output location does not exist."""


class JobAlreadyExists(DomainError):
    def __init__(self, jid: str) -> None:
        super().__init__(f"job '{jid}' already exists")
        self.jid = jid


class JobConflict(DomainError):
    """The job's other jobs are not in a state that allows this one (pfcon 6's guards)."""


class ImageNotAvailable(DomainError):
    """The job's image is not present on the compute backend and may not be pulled."""


class ResourceUnavailable(DomainError):
    """The backend cannot provide what the job asks for (e.g. GPUs)."""


class BackendUnavailable(DomainError):
    """A compute or storage backend could not be reached or failed transiently.

    The message names the backend ("Docker engine ...", "Swift ...") so that an
    operator knows where to look.
    """


class StorageFull(DomainError):
    """storeBase or the upload spool has no room left for the job's data."""


class ServerBusy(DomainError):
    """The server refuses more work of this kind for now (e.g. uploads in flight)."""


class AuthError(DomainError):
    """Base of authentication failures."""


class InvalidCredentials(AuthError):
    pass


class MissingToken(AuthError):
    pass


class MalformedAuthHeader(AuthError):
    pass


class InvalidToken(AuthError):
    pass


class ExpiredToken(AuthError):
    pass
