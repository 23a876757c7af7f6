"""Files: atomic writes (a killed process never leaves a half-written file), hashes, the cache, one downloader."""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from .errors import SamspError


@contextlib.contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `target`; on success it replaces `target` in one step, else it is removed."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    try:
        yield tmp
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def remove_stale_temporaries(folder: str | Path, recursive: bool = False) -> None:
    """Delete the temporaries a killed writer left in `folder` (`atomic_path` names them .NAME.tmp-PID); those of
    a process still running, such as another rank's, stay."""
    folder = Path(folder)
    for tmp in folder.rglob(".*.tmp-*") if recursive else folder.glob(".*.tmp-*"):
        pid = tmp.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not _alive(int(pid)):
            tmp.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    if os.name != "posix":  # os.kill(pid, 0) would end the process on Windows: keep the file
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def write_text_atomic(target: str | Path, text: str) -> Path:
    """Write a whole text file atomically (UTF-8); return its path."""
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(target)


def sha256_file(path: str | Path) -> str:
    """SHA-256 hex digest of a file, read in chunks so multi-GB checkpoints and archives do not fill memory."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def cache_root() -> Path:
    """Where samsp keeps downloads (checkpoints/, datasets/): $SAMSP_CACHE, else ~/.cache/samsp."""
    return Path(os.environ.get("SAMSP_CACHE") or Path.home() / ".cache" / "samsp")


def download(
    what: str, url: str, dest: str | Path, sha256: str | None = None, hint: str = "", timeout: float = 60
) -> str:
    """Download `what` from `url` to `dest` (through `dest.part`, renamed when complete); return its SHA-256.

    With `sha256`, a file whose digest differs is deleted and refused. Offline or on any transfer error, raises
    one SamspError that names `what` and the URL and ends with `hint` (what the user can do instead).
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, part.open("wb") as out:
            total = int(response.headers.get("Content-Length") or 0) or None
            from tqdm.auto import tqdm  # only when downloading: the torch-free ONNX install has no tqdm

            with tqdm(total=total, unit="B", unit_scale=True, desc=dest.name, disable=None) as bar:
                for block in iter(lambda: response.read(1 << 20), b""):
                    out.write(block)
                    bar.update(len(block))
    except (urllib.error.URLError, OSError, TimeoutError, http.client.HTTPException) as err:
        part.unlink(missing_ok=True)
        reason = getattr(err, "reason", None) or err
        raise SamspError(f"could not download {what} from {url} ({reason}). {hint}".rstrip()) from err
    digest = sha256_file(part)
    if sha256 is not None and digest != sha256.lower():
        part.unlink(missing_ok=True)
        raise SamspError(f"{url}: SHA-256 {digest} does not match the expected {sha256}; not used. {hint}".rstrip())
    os.replace(part, dest)
    return digest
