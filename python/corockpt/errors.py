"""corockpt's errors: one hierarchy, a class per error code of the C++ engine.

Every error the engine reports arrives as a subclass of ``corockpt.Error`` carrying the
engine's message, its code (``"corrupt"``, ``"not_found"``...) and its context (``rank``,
``fqn``, ``path``, ``operation``, when known). Errors the Python side finds itself (a
non-contiguous tensor, an unsupported dtype) use the same classes.
"""

from __future__ import annotations


class Error(Exception):
    """A corockpt error. ``str(e)`` is one line: code, message and context."""

    code = "internal"

    def __init__(self, message: str, *, context: dict | None = None, text: str | None = None):
        super().__init__(text if text is not None else f"{self.code}: {message}")
        self.message = message
        self.context = dict(context or {})


class InvalidArgument(Error, ValueError):
    code = "invalid_argument"


class NotFound(Error, FileNotFoundError):
    code = "not_found"


class AlreadyExists(Error, FileExistsError):
    code = "already_exists"


class PermissionDenied(Error, PermissionError):
    code = "permission_denied"


class NoSpace(Error, OSError):
    code = "no_space"


class NoMemory(Error, MemoryError):
    code = "no_memory"


class IoError(Error, OSError):
    code = "io"


class Timeout(Error, TimeoutError):
    code = "timeout"


class Cancelled(Error):
    code = "cancelled"


class Unavailable(Error):
    code = "unavailable"


class Corrupt(Error):
    code = "corrupt"


class Internal(Error):
    code = "internal"


_BY_CODE = {cls.code: cls for cls in (InvalidArgument, NotFound, AlreadyExists, PermissionDenied, NoSpace,
                                        NoMemory, IoError, Timeout, Cancelled, Unavailable, Corrupt, Internal)}


def from_native(code: str, message: str, text: str, context: dict) -> Error:
    """The exception for an error of the C++ engine (called by corockpt._native)."""
    return _BY_CODE.get(code, Internal)(message, context=context, text=text)


__all__ = ["Error"] + [cls.__name__ for cls in _BY_CODE.values()]
