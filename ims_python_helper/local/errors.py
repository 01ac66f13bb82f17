"""The errors of the local stack, apart from the client's own hierarchy."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Dict, Iterator, Mapping, Optional


class LocalStackError(RuntimeError):
    """A part of the local stack could not be installed, started, used or stopped."""


class ApiProblem(Exception):
    """A request to the local IMS that ends in an RFC 7807 problem reply."""

    TITLES: Dict[int, str] = {
        400: "Bad Request",
        401: "Unauthorized",
        404: "Not Found",
        405: "Method Not Allowed",
        409: "Conflict",
        422: "Unprocessable Entity",
        500: "Internal Server Error",
    }

    def __init__(self, status: int, detail: str, headers: Optional[Mapping[str, str]] = None) -> None:
        super().__init__(detail)
        self.status = status
        self.title = self.TITLES.get(status, "Error")
        self.detail = detail
        self.headers = dict(headers or {})


def unprocessable(detail: str) -> ApiProblem:
    """The 422 problem IMS answers a well-formed request whose content it refuses."""
    return ApiProblem(422, detail)


@contextmanager
def undone_on_error(undo: Callable[[], None]) -> Iterator[None]:
    """Run ``undo`` (then re-raise) when the block fails, even on Ctrl-C: a half-started server is stopped."""
    try:
        yield
    except BaseException:
        undo()
        raise
