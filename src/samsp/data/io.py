"""Read images and masks from any common file layout into one array convention.

Every loader decodes the whole file (``img.load()``) so a truncated or corrupt file fails here, with its name,
instead of deep inside a training loop. EXIF orientation is applied to images and masks alike so that a phone
photo and its mask line up the way a viewer shows them.
"""

from __future__ import annotations

import io
import struct
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from samsp.errors import DataError, ImageTooLarge

_HIGH_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")
# What a client may upload: the raster formats samsp reads (README), and no decoder that calls other programs.
UPLOAD_FORMATS = ("PNG", "JPEG", "TIFF", "BMP", "GIF", "WEBP", "PPM")


def load_pil(path: str | Path) -> Image.Image:
    """Open, fully decode and EXIF-orient one image file, turning every decoder failure into a DataError."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "file not found")
    try:
        stream = path.open("rb")
    except OSError as e:
        raise DataError(path, f"cannot open the file ({e.strerror or e})") from e
    with stream:
        return decode_pil(stream, path)


def decode_pil(
    stream: BinaryIO, name: str | Path, max_pixels: int | None = None, formats: tuple[str, ...] | None = None
) -> Image.Image:
    """Fully decode and EXIF-orient an image from a seekable binary stream; every failure is a DataError.

    `name` only labels the errors (an upload's file name, a path). `max_pixels` (default: Pillow's
    `Image.MAX_IMAGE_PIXELS`) is checked from the header before anything is decoded; `formats` restricts which
    Pillow decoders may be tried (None: all).
    """
    stream.seek(0, io.SEEK_END)
    if stream.tell() == 0:
        raise DataError(name, "file is empty (0 bytes); re-export or re-download it")
    stream.seek(0)
    limit = Image.MAX_IMAGE_PIXELS if max_pixels is None else max_pixels
    too_large = f"image is too large to decode safely; downscale it below {limit} pixels"
    try:
        with Image.open(stream, formats=formats) as opened:
            # Pillow raises only above twice its limit (and warns below); we refuse anything above ours, before
            # decoding. No warnings.catch_warnings here: it is not thread-safe and callers decode in threads.
            if limit is not None and opened.width * opened.height > limit:
                raise ImageTooLarge(name, f"{too_large} (it is {opened.width}x{opened.height})")
            if getattr(opened, "n_frames", 1) > 1:
                raise DataError(name, f"has {opened.n_frames} frames; save the one image or mask it holds on its own")
            opened.load()
            img = ImageOps.exif_transpose(opened)  # a decoded copy, so the stream can close here
    except Image.DecompressionBombError as e:
        raise ImageTooLarge(name, f"{too_large} ({e})") from e
    except UnidentifiedImageError as e:
        raise DataError(name, "not an image Pillow can read (wrong extension or unsupported format)") from e
    except (OSError, SyntaxError, ValueError, EOFError, struct.error) as e:
        raise DataError(name, f"cannot decode image, the file is truncated or corrupt ({e})") from e
    return img


def _to_uint8_by_max(arr: np.ndarray) -> np.ndarray:
    """Stretch high-bit-depth data to 0..255 by its own range; clipping would make most of them white."""
    arr = arr.astype(np.float64)
    lo, hi = min(float(arr.min()), 0.0), float(arr.max())
    if hi <= lo:
        return np.zeros(arr.shape, np.uint8)
    return np.round((arr - lo) * (255.0 / (hi - lo))).astype(np.uint8)


def read_image(path: str | Path) -> np.ndarray:
    """Read any image file as (H, W, 3) uint8 RGB (see `to_rgb` for how each mode is converted)."""
    return to_rgb(load_pil(path), path)


def decode_image(
    stream: BinaryIO, name: str, max_pixels: int | None = None, formats: tuple[str, ...] | None = UPLOAD_FORMATS
) -> np.ndarray:
    """Decode image bytes from a client (an upload) as (H, W, 3) uint8 RGB, with the checks `load_pil` makes.

    `name` only labels the errors; no path is ever opened. Only the formats in `formats` are tried (by default
    the common raster formats, so no decoder that runs external programs is reachable from a client).
    """
    return to_rgb(decode_pil(stream, name, max_pixels, formats), name)


def to_rgb(img: Image.Image, name: str | Path) -> np.ndarray:
    """A decoded image as (H, W, 3) uint8 RGB.

    Grayscale is replicated to 3 channels, 16-bit/32-bit/float grayscale is scaled by its maximum (not
    clipped), palette images are expanded through their palette, CMYK/YCbCr are converted, and transparency
    (RGBA, LA, palette with a transparent colour) is composited on black so that hidden pixels under alpha 0
    cannot leak in.
    """
    try:
        if img.mode in _HIGH_BIT_MODES:
            gray = _to_uint8_by_max(np.asarray(img))
            return np.repeat(gray[:, :, None], 3, axis=2)
        has_alpha = img.mode in ("RGBA", "LA", "PA", "La", "RGBa") or (img.mode == "P" and "transparency" in img.info)
        if has_alpha:
            rgba = np.asarray(img.convert("RGBA")).astype(np.uint16)
            rgb = (rgba[:, :, :3] * rgba[:, :, 3:4] + 127) // 255
            return np.ascontiguousarray(rgb.astype(np.uint8))
        return np.ascontiguousarray(np.asarray(img.convert("RGB")))
    except (ValueError, OSError) as e:
        raise DataError(name, f"cannot convert image mode {img.mode} to RGB ({e})") from e


def read_mask(path: str | Path) -> np.ndarray:
    """Read a binary mask as (H, W) bool, whatever encoding the annotator used.

    Rules: a palette (P) mask uses the palette index (index > 0 is foreground) because colours are arbitrary
    there; other masks are converted to grayscale and, if their maximum is <= 1 (0/1 masks), foreground is
    value > 0, else value > 127 (0/255 and lossy JPEG masks, which are never exactly 255). 16-bit/32-bit masks
    whose maximum exceeds 255 are thresholded at half the 16-bit range (> 32767); if their values fit in
    0..255 they follow the 8-bit rule, so a 0/255 mask saved as 16-bit still works. Alpha is ignored.
    """
    path = Path(path)
    img = load_pil(path)
    if img.mode == "1":
        return np.asarray(img).astype(bool)
    if img.mode in ("P", "PA"):
        index = np.asarray(img)
        return (index[:, :, 0] if index.ndim == 3 else index) > 0
    try:
        arr = np.asarray(img) if img.mode in _HIGH_BIT_MODES else np.asarray(img.convert("L"))
    except (ValueError, OSError) as e:
        raise DataError(path, f"cannot convert mask mode {img.mode} to grayscale ({e})") from e
    top = float(arr.max()) if arr.size else 0.0
    if top <= 1:
        return arr > 0
    return arr > (127 if top <= 255 else 32767)


def require_same_size(image_path: str | Path, mask_path: str | Path, image: np.ndarray, mask: np.ndarray) -> None:
    """Refuse a pair whose sizes differ: silently resizing would hide mislabelled or mismatched files."""
    if mask.shape[:2] != image.shape[:2]:
        (ih, iw), (mh, mw) = image.shape[:2], mask.shape[:2]
        raise DataError(
            mask_path,
            f"mask is {mw}x{mh} (WxH) but its image {Path(image_path).name} is {iw}x{ih}; "
            "resize the mask with nearest-neighbour or fix the pairing",
        )


def read_pair(image_path: str | Path, mask_path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Read an image (H, W, 3 uint8) and its mask (H, W bool), EXIF-oriented, and check the sizes match."""
    image = read_image(image_path)
    mask = read_mask(mask_path)
    require_same_size(image_path, mask_path, image, mask)
    return image, mask
