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


def first_line(err: BaseException) -> str:
    """The first line of an exception's message, or its type's name when it has none: for one-line errors that wrap a
    library's multi-line one."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


class Preempted(Exception):  # noqa: N818 (not an error: the run stopped on request and can be resumed)
    """Training stopped on SIGTERM/SIGUSR1 after saving a resumable checkpoint."""

    def __init__(self, signal_name: str, run_dir: Path, epoch: int, step: int):
        self.signal_name, self.run_dir, self.epoch, self.step = signal_name, Path(run_dir), epoch, step
        super().__init__(
            f"stopped by {signal_name} in epoch {epoch} after step {step}; a resumable checkpoint is in "
            f"{self.run_dir / 'last'}; continue with: samsp train --resume {self.run_dir}"
        )
