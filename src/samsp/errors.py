"""One exception type for everything a user can fix, so the CLI can print one line instead of a traceback."""

from __future__ import annotations

from pathlib import Path


class SamspError(Exception):
    """A problem the user can fix: bad input, missing file, wrong checkpoint. The message says what to do."""


class DataError(SamspError):
    """A data file that cannot be used; the message always names the file."""

    def __init__(self, path: str | Path, problem: str):
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class ImageTooLarge(DataError):
    """An image over the pixel limit, refused from its header before it is decoded."""
