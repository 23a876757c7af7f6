"""Named public datasets: downloaded once into a cache, verified, laid out as ``images/`` + ``masks/``.

Nothing here runs unless a user asks for a dataset by name; offline users get a message telling them how to
download and point at the folder themselves.
"""

from __future__ import annotations

import bisect
import json
import os
import shutil
import tempfile
import warnings
import zipfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from samsp.data.pairs import is_image_file
from samsp.errors import DataError, SamspError
from samsp.files import cache_root, download, sha256_file

_MARKER = ".complete.json"


@dataclass(frozen=True)
class Move:
    """Image files in ``source`` (a folder in the archive) move to ``dest``, minus ``strip_suffix``."""

    source: str
    dest: str
    strip_suffix: str = ""


@dataclass(frozen=True)
class Archive:
    """One downloadable zip; ``expected_sha256`` is None where no trustworthy published hash is known."""

    url: str
    expected_sha256: str | None
    moves: tuple[Move, ...]

    @property
    def filename(self) -> str:
        """File name of the zip in the download cache."""
        return self.url.rsplit("/", 1)[-1]


@dataclass(frozen=True)
class NamedDataset:
    """A dataset ``fetch`` knows how to obtain; ``manual_hint`` is added to the offline message."""

    name: str
    homepage: str
    licence: str
    archives: tuple[Archive, ...]
    pranet_split: str | None = None
    manual_hint: str = ""


DATASETS: dict[str, NamedDataset] = {
    "kvasir-seg": NamedDataset(
        name="kvasir-seg",
        homepage="https://datasets.simula.no/kvasir-seg/",
        licence="research and educational use only; cite Jha et al., Kvasir-SEG, MMM 2020",
        archives=(
            Archive(
                url="https://datasets.simula.no/downloads/kvasir-seg.zip",
                expected_sha256=None,
                moves=(Move("Kvasir-SEG/images", "images"), Move("Kvasir-SEG/masks", "masks")),
            ),
        ),
        pranet_split="kvasir",
    ),
    "isic2018": NamedDataset(
        name="isic2018",
        homepage="https://challenge.isic-archive.com/data/#2018",
        licence="CC BY-NC 4.0; see the ISIC 2018 challenge attribution",
        archives=(
            Archive(
                url="https://isic-challenge-data.s3.amazonaws.com/2018/ISIC2018_Task1-2_Training_Input.zip",
                expected_sha256=None,
                moves=(Move("ISIC2018_Task1-2_Training_Input", "images"),),
            ),
            Archive(
                url="https://isic-challenge-data.s3.amazonaws.com/2018/ISIC2018_Task1_Training_GroundTruth.zip",
                expected_sha256=None,
                moves=(Move("ISIC2018_Task1_Training_GroundTruth", "masks", strip_suffix="_segmentation"),),
            ),
        ),
        manual_hint="the masks are named <id>_segmentation.png, so also set the mask suffix to _segmentation",
    ),
}

_PRANET_KEYS = {"kvasir": "kvasir", "kvasir-seg": "kvasir", "cvc": "cvc", "cvc-clinicdb": "cvc"}


def default_cache_dir() -> Path:
    """``$SAMSP_CACHE/datasets`` if SAMSP_CACHE is set, else ``~/.cache/samsp/datasets``."""
    return cache_root() / "datasets"


def pranet_split(name: str) -> tuple[list[str], list[str]]:
    """The (train ids, test ids) of the PraNet split that polyp papers report on, shipped with the package."""
    key = _PRANET_KEYS.get(name.lower())
    if key is None:
        raise SamspError(f"no PraNet split for {name!r}; known: {', '.join(sorted(_PRANET_KEYS))}")
    folder = resources.files("samsp").joinpath("splits")
    lists = []
    for part in ("train", "test"):
        text = folder.joinpath(f"{key}_pranet_{part}.txt").read_text(encoding="utf-8")
        lists.append([line.strip() for line in text.splitlines() if line.strip()])
    return lists[0], lists[1]


# CVC-ClinicDB's 612 frames come from 29 video sequences, each a run of frame numbers; the first frame of each, from
# the table in the dataset's README (README_CVC-ClinicDB.txt)
_CVC_SEQUENCE_STARTS = (1, 26, 51, 68, 79, 104, 127, 152, 178, 200, 206, 228, 253, 278, 298, 318, 343, 364, 384, 409,
                        429, 448, 467, 479, 504, 529, 547, 572, 592)  # fmt: skip


def cvc_sequence(frame_id: str) -> int:
    """The video sequence (1-29) of a CVC-ClinicDB frame id ("1" to "612"): neighbouring frames of one sequence look
    alike, so a validation split that should measure new videos keeps each sequence on one side."""
    try:
        frame = int(frame_id)
    except ValueError:
        raise SamspError(f"CVC-ClinicDB frame ids are numbers 1-612, got {frame_id!r}") from None
    if not 1 <= frame <= 612:
        raise SamspError(f"CVC-ClinicDB frame ids are numbers 1-612, got {frame_id!r}")
    return bisect.bisect_right(_CVC_SEQUENCE_STARTS, frame)


def _download(ds: NamedDataset, archive: Archive, folder: Path) -> tuple[Path, str]:
    dest = folder / archive.filename
    hint = (
        f"Download it yourself from {archive.url}, unzip it, and pass --data PATH/TO/FOLDER (with images/ and masks/)"
        + (f"; {ds.manual_hint}" if ds.manual_hint else "")
    )
    if dest.is_file():
        digest = sha256_file(dest)
        if archive.expected_sha256 is not None and digest != archive.expected_sha256.lower():
            dest.unlink()
            raise SamspError(
                f"{dest}: SHA-256 {digest}, expected {archive.expected_sha256}; the file was deleted. Retry, or {hint}"
            )
    else:
        digest = download(ds.name, archive.url, dest, archive.expected_sha256, hint=hint)
    if archive.expected_sha256 is None:
        dest.with_name(dest.name + ".sha256").write_text(f"{digest}  {dest.name}\n", encoding="utf-8")
        warnings.warn(
            f"{dest.name}: no published SHA-256 is known, so the download could not be verified; "
            f"its SHA-256 is {digest} (recorded next to it)",
            stacklevel=3,
        )
    return dest, digest


def _find_dir(base: Path, rel: str, zip_path: Path) -> Path:
    # Archives are sometimes re-zipped with an extra top folder; accept the expected folder at any depth.
    parts = Path(rel).parts
    direct = base.joinpath(*parts)
    if direct.is_dir():
        return direct
    found = [d for d in base.rglob(parts[-1]) if d.is_dir() and d.parts[-len(parts) :] == parts]
    if len(found) != 1:
        raise DataError(
            zip_path,
            f"expected one folder {rel}/ inside the archive, found {len(found)}; its layout has changed. "
            "Unzip it yourself and pass --data PATH/TO/FOLDER (with images/ and masks/)",
        )
    return found[0]


def _unpack(archive: Archive, zip_path: Path, staging: Path) -> None:
    raw = staging / "source"
    try:
        with zipfile.ZipFile(zip_path) as zf:
            for member in zf.namelist():
                target = (raw / member).resolve()
                if not target.is_relative_to(raw.resolve()):
                    raise DataError(zip_path, f"archive member {member!r} would unpack outside the target folder")
            zf.extractall(raw)
    except zipfile.BadZipFile as e:
        zip_path.unlink()
        raise DataError(zip_path, f"not a valid zip file ({e}); it was deleted, retry the download") from e
    for move in archive.moves:
        source = _find_dir(raw, move.source, zip_path)
        dest = staging / move.dest
        dest.mkdir(parents=True, exist_ok=True)
        for f in sorted(source.iterdir()):
            if f.is_file() and is_image_file(f):
                stem = f.stem.removesuffix(move.strip_suffix) if move.strip_suffix else f.stem
                f.replace(dest / f"{stem}{f.suffix}")


def fetch(name: str, cache_dir: str | Path | None = None) -> Path:
    """Download (once), verify and unpack a named dataset; return its root with ``images/`` and ``masks/``.

    Files left over from the archives (licences, bounding boxes) are kept under ``source/``. For datasets with
    a PraNet split, ``splits/pranet_{train,test}.txt`` are written too.
    """
    ds = DATASETS.get(name)
    if ds is None:
        raise SamspError(f"unknown dataset {name!r}; known: {', '.join(sorted(DATASETS))}")
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    root = cache / ds.name
    if (root / _MARKER).is_file():
        return root
    downloads = [_download(ds, a, cache / "downloads") for a in ds.archives]
    staging = Path(tempfile.mkdtemp(dir=cache, prefix=f".{ds.name}."))
    try:
        for archive, (zip_path, _) in zip(ds.archives, downloads, strict=True):
            _unpack(archive, zip_path, staging)
        if ds.pranet_split:
            (staging / "splits").mkdir()
            for ids, part in zip(pranet_split(ds.pranet_split), ("train", "test"), strict=True):
                text = "".join(f"{i}\n" for i in ids)
                (staging / "splits" / f"pranet_{part}.txt").write_text(text, encoding="utf-8")
        sources = [
            {"url": a.url, "sha256": d, "verified": a.expected_sha256 is not None}
            for a, (_, d) in zip(ds.archives, downloads, strict=True)
        ]
        marker = {"name": ds.name, "homepage": ds.homepage, "licence": ds.licence, "sources": sources}
        (staging / _MARKER).write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")
        if root.exists():
            shutil.rmtree(root)
        os.replace(staging, root)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return root
