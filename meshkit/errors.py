"""Errors that domain code raises. They know nothing of gRPC: the server's
error interceptor maps each kind to its status code, so domain logic stays
transport-free and the message a client sees is always deliberate."""

from __future__ import annotations


class ServiceError(Exception):
    """An error whose message is safe to show the caller."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgument(ServiceError):
    """The request is malformed. `field` names the offending field."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field
        self.description = message


class NotFound(ServiceError):
    pass


class AlreadyExists(ServiceError):
    pass


class Unauthenticated(ServiceError):
    pass


# Why an access token was refused when it has merely expired: the one
# UNAUTHENTICATED after which a client renews its token and tries again.
ACCESS_TOKEN_EXPIRED = "access token expired"


class PermissionDenied(ServiceError):
    pass


class FailedPrecondition(ServiceError):
    pass


class ResourceExhausted(ServiceError):
    pass


class Aborted(ServiceError):
    """Another request on the same thing is under way; retry later."""


class Unavailable(ServiceError):
    pass
