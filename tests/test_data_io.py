"""Image/mask readers on a corpus of awkward files made here, on the real data, and the augmentation."""

from __future__ import annotations

import io
import pickle
import warnings

import numpy as np
import pytest
from PIL import Image

from samsp.data import build_augment, decode_image, read_image, read_mask, read_pair
from samsp.errors import DataError, SamspError


def _exif_rotated_jpeg(path, orientation: int = 6) -> None:
    """A 40 wide x 20 high JPEG whose EXIF says 'rotate 90 degrees clockwise to display' (so 20 x 40)."""
    img = Image.new("RGB", (40, 20), (200, 30, 30))
    img.paste((30, 30, 200), (0, 0, 10, 20))  # blue strip on the left before rotation
    exif = Image.Exif()
    exif[0x0112] = orientation
    img.save(path, exif=exif, quality=95)


# ---------------------------------------------------------------- bad files: errors naming the file
def test_zero_byte_file(tmp_path):
    path = tmp_path / "empty.png"
    path.write_bytes(b"")
    with pytest.raises(DataError, match="empty.png.*0 bytes"):
        read_image(path)


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="nothere.jpg.*not found"):
        read_mask(tmp_path / "nothere.jpg")


def test_non_image_renamed_png(tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("this is not an image\n")
    with pytest.raises(DataError, match="notes.png.*not an image"):
        read_image(path)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_truncated_file(tmp_path, fmt):
    rng = np.random.default_rng(0)
    path = tmp_path / f"cut.{fmt.lower()}"
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(path, format=fmt)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=f"cut.{fmt.lower()}.*truncated or corrupt"):
        read_image(path)


@pytest.mark.parametrize("side", [40, 100])  # 1600 px: Pillow only warns; 10000 px: Pillow raises
def test_image_too_large(tmp_path, monkeypatch, side):
    path = tmp_path / "huge.png"
    Image.new("L", (side, side)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # Pillow's own, before our error
        with pytest.raises(DataError, match="huge.png.*too large"):
            read_image(path)


def test_size_mismatch_names_mask(tmp_path):
    Image.new("RGB", (30, 20)).save(tmp_path / "a.png")
    Image.new("L", (31, 20)).save(tmp_path / "a_mask.png")
    with pytest.raises(DataError, match=r"a_mask.png: mask is 31x20.*a.png is 30x20"):
        read_pair(tmp_path / "a.png", tmp_path / "a_mask.png")


# ---------------------------------------------------------------- uploads: the same checks on bytes
def _png_bytes(array: np.ndarray, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=fmt)
    return buffer.getvalue()


def test_decoded_bytes_equal_the_file(tmp_path):
    rng = np.random.default_rng(1)
    data = _png_bytes(rng.integers(0, 255, (30, 40, 3), dtype=np.uint8), "JPEG")
    (tmp_path / "a.jpg").write_bytes(data)
    np.testing.assert_array_equal(decode_image(io.BytesIO(data), "a.jpg"), read_image(tmp_path / "a.jpg"))


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b"", "0 bytes"),
        (b"this is not an image\n", "not an image"),
        (_png_bytes(np.random.default_rng(0).integers(0, 255, (40, 40, 3), dtype=np.uint8))[:2000], "truncated"),
        (_png_bytes(np.zeros((50, 50), np.uint8)), "too large"),
        (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n", "not an image"),  # no Ghostscript for clients
    ],
    ids=["empty", "text", "truncated", "over-the-pixel-limit", "eps"],
)
def test_bad_uploads_name_the_upload(data, problem):
    with pytest.raises(DataError, match=f"upload.png.*{problem}"):
        decode_image(io.BytesIO(data), "upload.png", max_pixels=2000)


# ---------------------------------------------------------------- odd but valid images
def test_rgb_grayscale_cmyk(tmp_path):
    Image.new("RGB", (5, 4), (10, 20, 30)).save(tmp_path / "rgb.png")
    Image.new("L", (5, 4), 77).save(tmp_path / "gray.png")
    Image.new("CMYK", (5, 4), (0, 255, 255, 0)).save(tmp_path / "cmyk.jpg")
    rgb, gray, cmyk = (read_image(tmp_path / n) for n in ("rgb.png", "gray.png", "cmyk.jpg"))
    for arr in (rgb, gray, cmyk):
        assert arr.shape == (4, 5, 3) and arr.dtype == np.uint8
    assert (rgb == [10, 20, 30]).all()
    assert (gray == 77).all()
    assert cmyk[..., 0].min() > 200 and cmyk[..., 1:].max() < 60  # pure red in CMYK


def test_16bit_png_scaled_by_max_not_clipped(tmp_path):
    values = np.array([[0, 1000], [2000, 4000]], dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "deep.png")
    with Image.open(tmp_path / "deep.png") as check:
        assert check.mode.startswith("I;16")
    out = read_image(tmp_path / "deep.png")
    assert out.shape == (2, 2, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out[..., 0], [[0, 64], [128, 255]])


def test_rgba_composited_on_black(tmp_path):
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[..., :3] = (200, 100, 50)
    rgba[..., 3] = [[0, 255], [128, 255]]
    Image.fromarray(rgba, "RGBA").save(tmp_path / "alpha.png")
    out = read_image(tmp_path / "alpha.png")
    assert out.shape == (2, 2, 3)
    np.testing.assert_array_equal(out[0, 0], [0, 0, 0])
    np.testing.assert_array_equal(out[0, 1], [200, 100, 50])
    np.testing.assert_array_equal(out[1, 0], [100, 50, 25])


def test_palette_image_expanded(tmp_path):
    img = Image.fromarray(np.array([[0, 1], [2, 1]], np.uint8), "P")
    img.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * 759)
    img.save(tmp_path / "pal.png")
    out = read_image(tmp_path / "pal.png")
    np.testing.assert_array_equal(out[0, 0], [255, 0, 0])
    np.testing.assert_array_equal(out[0, 1], [0, 255, 0])
    np.testing.assert_array_equal(out[1, 0], [0, 0, 255])


def test_exif_rotated_jpeg_is_transposed(tmp_path):
    _exif_rotated_jpeg(tmp_path / "phone.jpg")
    out = read_image(tmp_path / "phone.jpg")
    assert out.shape == (40, 20, 3)  # displayed size: 20 wide, 40 high
    assert out[:8, :, 2].mean() > 150 and out[-8:, :, 0].mean() > 150  # the left strip is now on top
    Image.new("L", (20, 40), 255).save(tmp_path / "phone_mask.png")  # annotated as displayed
    image, mask = read_pair(tmp_path / "phone.jpg", tmp_path / "phone_mask.png")
    assert image.shape[:2] == mask.shape == (40, 20)
    _exif_rotated_jpeg(tmp_path / "rotated_mask.jpg")  # masks are EXIF-oriented too
    assert read_mask(tmp_path / "rotated_mask.jpg").shape == (40, 20)


# ---------------------------------------------------------------- masks
def _square(h: int = 16, w: int = 16) -> np.ndarray:
    m = np.zeros((h, w), bool)
    m[4:12, 3:9] = True
    return m


@pytest.mark.parametrize("scale", [1, 255])
def test_mask_0_1_and_0_255(tmp_path, scale):
    Image.fromarray(_square().astype(np.uint8) * scale).save(tmp_path / "m.png")
    out = read_mask(tmp_path / "m.png")
    assert out.dtype == bool
    np.testing.assert_array_equal(out, _square())


def test_mask_mode_1(tmp_path):
    Image.fromarray(_square()).convert("1").save(tmp_path / "m.png")
    np.testing.assert_array_equal(read_mask(tmp_path / "m.png"), _square())


@pytest.mark.parametrize("top", [1, 255, 65535])
def test_mask_16bit(tmp_path, top):
    Image.fromarray(_square().astype(np.uint16) * top).save(tmp_path / "m16.png")
    np.testing.assert_array_equal(read_mask(tmp_path / "m16.png"), _square())


def test_mask_lossy_jpeg_thresholded(tmp_path):
    big = np.kron(_square(), np.ones((4, 4), bool))
    Image.fromarray(big.astype(np.uint8) * 255).convert("RGB").save(tmp_path / "m.jpg", quality=60)
    raw = np.asarray(Image.open(tmp_path / "m.jpg").convert("L"))
    assert len(np.unique(raw)) > 2  # really lossy
    out = read_mask(tmp_path / "m.jpg")
    assert out.dtype == bool and (out != big).mean() < 0.01


def test_palette_mask_uses_index(tmp_path):
    index = _square().astype(np.uint8) * 2  # index 2 = foreground
    img = Image.fromarray(index, "P")
    img.putpalette([255, 255, 255, 9, 9, 9, 0, 0, 0] + [0] * 759)  # background white, foreground black
    img.save(tmp_path / "pal_mask.png")
    np.testing.assert_array_equal(read_mask(tmp_path / "pal_mask.png"), _square())


# ---------------------------------------------------------------- real data
def test_real_kvasir_pair(shared_data):
    root = shared_data / "kvasir-seg"
    ids = [line.strip() for line in (root / "splits" / "pranet_test.txt").read_text().splitlines()[:20]]
    fractions = []
    for i in ids:
        image, mask = read_pair(root / "images" / f"{i}.jpg", root / "masks" / f"{i}.jpg")
        assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
        assert mask.dtype == bool and set(np.unique(mask.astype(np.uint8))) <= {0, 1}
        fractions.append(mask.mean())
    raw = np.asarray(Image.open(root / "masks" / f"{ids[0]}.jpg").convert("L"))
    assert len(np.unique(raw)) > 2  # JPEG mask really has intermediate levels
    assert 0.05 < float(np.mean(fractions)) < 0.4  # README: mean foreground fraction 0.154
    assert all(0 < f < 0.9 for f in fractions)


def test_real_cvc_pair(shared_data):
    root = shared_data / "cvc-clinicdb-256"
    image, mask = read_pair(root / "images" / "14.jpg", root / "masks" / "14.jpg")
    assert image.shape == (256, 256, 3) and mask.shape == (256, 256)
    assert 0 < mask.mean() < 0.6


# ---------------------------------------------------------------- augmentation
@pytest.mark.parametrize("cfg", [None, False, {}])
def test_augment_off(cfg):
    assert build_augment(cfg) is None


def _sample() -> tuple[np.ndarray, np.ndarray]:
    mask = np.zeros((48, 64), np.uint8)
    mask[5:20, 10:40] = 1
    image = np.zeros((48, 64, 3), np.uint8)
    image[..., 0] = mask * 255
    image[..., 1] = np.arange(64, dtype=np.uint8)[None, :] * 3
    return image, mask


def test_augment_seeded_and_mask_follows_image():
    image, mask = _sample()
    a = build_augment({"color": 0.0, "hflip": 1.0}, seed=3)
    b = pickle.loads(pickle.dumps(build_augment({"color": 0.0, "hflip": 1.0}, seed=3)))
    for _ in range(5):
        (ia, ma), (ib, mb) = a(image, mask), b(image, mask)
        np.testing.assert_array_equal(ia, ib)
        np.testing.assert_array_equal(ma, mb)
        assert ma.dtype == np.uint8 and set(np.unique(ma)) <= {0, 1}
        assert ((ia[..., 0] > 127) != (ma > 0)).mean() < 0.01  # same geometry for both
    changed = [not np.array_equal(a(image, mask)[0], image) for _ in range(5)]
    assert all(changed)  # hflip with p=1 always changes this asymmetric image
    a.set_seed(3)  # what a DataLoader worker_init_fn would call with a per-worker seed
    fresh = build_augment({"color": 0.0, "hflip": 1.0}, seed=3)
    np.testing.assert_array_equal(a(image, mask)[0], fresh(image, mask)[0])


def test_augment_defaults_and_bad_config():
    assert build_augment(True, seed=0) is not None
    with pytest.raises(SamspError, match="unknown augment option"):
        build_augment({"flip": 0.5})
    with pytest.raises(SamspError, match=r"\[0, 1\]"):
        build_augment({"hflip": 2})
