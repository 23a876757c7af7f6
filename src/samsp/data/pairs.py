"""Pair image files with their mask files by name, reporting every unpaired file at once."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

from samsp.errors import DataError, SamspError

# every single-frame format Pillow reads that image and mask datasets ship (DRIVE and STARE masks are GIF)
IMAGE_EXTENSIONS = (
    ".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif", ".webp", ".ppm", ".pgm", ".pbm", ".pnm"
)  # fmt: skip
_MAX_LISTED = 20


@dataclass(frozen=True)
class Pair:
    """One labelled sample; ``mask`` is None for unlabelled images."""

    id: str
    image: Path
    mask: Path | None


def is_image_file(path: Path) -> bool:
    """True for a visible file with an accepted image extension (not hidden files like macOS ``._x.jpg``)."""
    return path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def _listing(items: list[str]) -> str:
    shown = ", ".join(items[:_MAX_LISTED])
    more = len(items) - _MAX_LISTED
    return shown + (f" ... and {more} more" if more > 0 else "")


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and is_image_file(p))


def _require_dir(folder: Path, expected: str) -> None:
    if not folder.is_dir():
        raise DataError(folder, f"folder not found; expected {expected}")


def find_pairs(
    root: str | Path,
    images_dir: str = "images",
    masks_dir: str | None = "masks",
    mask_suffix: str = "",
    mask_ext: str | None = None,
    on_unpaired: str = "error",
) -> list[Pair]:
    """Pair ``root/images_dir/<id>.<ext>`` with ``root/masks_dir/<id><mask_suffix>.<ext>``, sorted by id.

    The mask extension may differ from the image's (``mask_ext`` pins it); when several mask files fit, the
    one with the image's extension wins, otherwise it is an error. ``on_unpaired="error"`` raises one
    SamspError that lists every image without a mask and every mask without an image; ``"skip"`` warns with
    that list and continues. ``masks_dir=None`` returns unlabelled pairs (mask None).
    """
    if on_unpaired not in ("error", "skip"):
        raise SamspError(f"on_unpaired must be 'error' or 'skip', not {on_unpaired!r}")
    root = Path(root)
    _require_dir(root, f"a dataset folder containing {images_dir}/ and {masks_dir}/")
    image_folder = root / images_dir
    by_id = _images_by_id(image_folder)
    if masks_dir is None:
        return [Pair(i, img, None) for i, img in sorted(by_id.items())]
    mask_folder = root / masks_dir
    _require_dir(mask_folder, f"the masks in {mask_folder}/, named <id>{mask_suffix}.png/.jpg/...")
    want_ext = None if mask_ext is None else "." + mask_ext.lower().lstrip(".")
    masks: dict[str, list[Path]] = {}
    for m in _image_files(mask_folder):
        if want_ext is None or m.suffix.lower() == want_ext:
            masks.setdefault(m.stem, []).append(m)
    pairs, no_mask, ambiguous = [], [], []
    for i, img in sorted(by_id.items()):
        candidates = masks.pop(f"{i}{mask_suffix}", [])
        if len(candidates) > 1:
            same = [m for m in candidates if m.suffix.lower() == img.suffix.lower()]
            candidates = same if len(same) == 1 else candidates
        if not candidates:
            no_mask.append(img.name)
        elif len(candidates) > 1:
            ambiguous.append(f"{img.name} -> {', '.join(m.name for m in candidates)}")
        else:
            pairs.append(Pair(i, img, candidates[0]))
    if ambiguous:
        raise DataError(mask_folder, f"several masks fit one image, keep one or set mask_ext: {_listing(ambiguous)}")
    no_image = sorted(m.name for ms in masks.values() for m in ms)
    if no_mask or no_image:
        _unpaired(image_folder, mask_folder, mask_suffix, no_mask, no_image, on_unpaired)
    if not pairs:
        raise DataError(root, "no image/mask pairs found; check images_dir, masks_dir and mask_suffix")
    return pairs


def _images_by_id(image_folder: Path) -> dict[str, Path]:
    """The image files of a folder by id (file stem); an error for a missing or empty folder or a shared id."""
    _require_dir(image_folder, f"the images in {image_folder}/ (one file per image, named <id>.png/.jpg/...)")
    images = _image_files(image_folder)
    if not images:
        raise DataError(image_folder, f"no image files found (accepted extensions: {' '.join(IMAGE_EXTENSIONS)})")
    by_id: dict[str, list[Path]] = {}
    for img in images:
        by_id.setdefault(img.stem, []).append(img)
    clashes = [f"{i} ({', '.join(p.name for p in ps)})" for i, ps in by_id.items() if len(ps) > 1]
    if clashes:
        raise DataError(image_folder, f"several images share an id, keep one of each: {_listing(clashes)}")
    return {i: ps[0] for i, ps in by_id.items()}


def _unpaired(
    image_folder: Path, mask_folder: Path, suffix: str, no_mask: list[str], no_image: list[str], on_unpaired: str
) -> None:
    """Raise (or warn, for "skip") with every unpaired file and why masks may not have been read."""
    parts = _unread_formats(mask_folder) if no_mask else []
    if no_mask:
        parts.append(
            f"{len(no_mask)} image(s) in {image_folder} have no mask <id>{suffix}.<ext> in {mask_folder}: "
            f"{_listing(no_mask)}"
        )
    if no_image:
        parts.append(f"{len(no_image)} mask(s) in {mask_folder} have no image: {_listing(no_image)}")
    message = "; ".join(parts)
    if on_unpaired == "error":
        raise SamspError(f"{message}. Fix the names, set the mask suffix/extension, or skip unpaired files.")
    warnings.warn(f"skipping unpaired files: {message}", stacklevel=3)


def _unread_formats(folder: Path) -> list[str]:
    """A sentence per file format in `folder` that samsp does not read, so "no mask" is explained."""
    others: dict[str, int] = {}
    for path in folder.iterdir():
        if path.is_file() and not path.name.startswith(".") and not is_image_file(path):
            key = path.suffix.lower() or "(no extension)"
            others[key] = others.get(key, 0) + 1
    return [
        f"{folder} holds {n} {ext} file(s), a format samsp does not read (accepted: {' '.join(IMAGE_EXTENSIONS)})"
        for ext, n in sorted(others.items(), key=lambda item: -item[1])
    ]


def find_images(paths: list[str | Path]) -> list[Path]:
    """Expand prediction inputs: files kept in order, folders add their images (sorted, not recursive)."""
    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            files = _image_files(path)
            if not files:
                raise DataError(path, f"folder has no image files (accepted: {' '.join(IMAGE_EXTENSIONS)})")
            found.extend(files)
        elif path.is_file():
            if not is_image_file(path):
                raise DataError(path, f"not an image file (accepted extensions: {' '.join(IMAGE_EXTENSIONS)})")
            found.append(path)
        else:
            raise DataError(path, "no such file or folder")
    if not found:
        raise SamspError("no input images given")
    return found
