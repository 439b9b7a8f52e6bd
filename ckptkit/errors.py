"""One exception hierarchy. Every error ckptkit raises on purpose is a CkptError:
the CLI prints it as one line, ``ckptkit: <where>: <what>``, and exits with its code."""
from __future__ import annotations


class CkptError(Exception):
    """Base class. ``where`` names the file, repo or argument at fault."""

    exit_code = 2

    def __init__(self, message: str, where: str | None = None):
        super().__init__(message)
        self.message = message
        self.where = where

    def __str__(self) -> str:
        return f"{self.where}: {self.message}" if self.where else self.message


class FormatError(CkptError):
    """A file does not follow its format's specification (safetensors, GGUF, JSON)."""


class SourceError(CkptError):
    """A source cannot be opened: missing file, unknown repo, nothing readable in a folder."""


class UnsafeInputError(CkptError):
    """Input ckptkit refuses on principle: pickles, path traversal, links out of a folder."""


class NetworkError(CkptError):
    """The Hub (or its stand-in) could not serve a request within the retry budget."""


class UnsupportedError(CkptError):
    """Valid input that ckptkit does not handle (yet): says what is missing."""
