"""Fuzzing the readers and the config loader: whatever the bytes, only samsp's own one-line errors come out."""

import io

import numpy as np
import pytest
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st
from PIL import Image

from samsp.config import TrainConfig, apply_overrides, load_config
from samsp.data.io import read_image, read_mask
from samsp.errors import DataError, SamspError

FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _encoded(fmt: str) -> bytes:
    rng = np.random.default_rng(0)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)).save(buffer, format=fmt)
    return buffer.getvalue()


VALID = {fmt: _encoded(fmt) for fmt in ("PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP")}


@st.composite
def damaged_files(draw) -> tuple[str, bytes]:
    """A valid file of some format with bytes flipped, cut, or inserted; or plain random bytes."""
    fmt = draw(st.sampled_from(sorted(VALID)))
    data = bytearray(VALID[fmt])
    kind = draw(st.sampled_from(["flip", "cut", "insert", "random"]))
    if kind == "flip":
        for _ in range(draw(st.integers(1, 8))):
            data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    elif kind == "cut":
        data = data[: draw(st.integers(0, len(data) - 1))]
    elif kind == "insert":
        at = draw(st.integers(0, len(data)))
        data[at:at] = draw(st.binary(min_size=1, max_size=64))
    else:
        data = bytearray(draw(st.binary(max_size=512)))
    return fmt.lower(), bytes(data)


@seed(20261123)
@FUZZ
@given(damaged_files())
def test_damaged_images_and_masks_give_only_data_errors_naming_the_file(tmp_path, case):
    ext, data = case
    path = tmp_path / f"f.{ext}"
    path.write_bytes(data)
    for reader in (read_image, read_mask):
        try:
            out = reader(path)
        except DataError as err:
            assert str(path) in str(err) and "\n" not in str(err)
        else:
            assert out.shape[:2] == (24, 32) or out.size > 0


yaml_text = st.one_of(
    st.text(max_size=200),
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
        lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
        max_leaves=12,
    ).map(lambda value: __import__("yaml").safe_dump(value)),
    st.dictionaries(
        st.sampled_from(["model", "loss", "data", "optim", "runtime", "other"]),
        st.dictionaries(
            st.sampled_from(["lr", "epochs", "backbone", "augment", "seed", "path", "threshold", "x"]),
            st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10) | st.lists(st.integers()),
        ),
    ).map(lambda value: __import__("yaml").safe_dump(value)),
)


@seed(20261123)
@FUZZ
@given(yaml_text)
def test_any_yaml_config_loads_or_gives_one_line_naming_the_file(tmp_path, text):
    path = tmp_path / "config.yaml"
    path.write_text(text, encoding="utf-8")
    try:
        load_config(path)
    except SamspError as err:
        assert str(err).startswith(str(path)) and "\n" not in str(err)


@seed(20261123)
@settings(max_examples=600, deadline=None)
@given(st.lists(st.text(max_size=40), max_size=3))
def test_any_override_text_applies_or_gives_one_line(overrides):
    try:
        apply_overrides(TrainConfig(), overrides)
    except SamspError as err:
        assert "\n" not in str(err)


def test_the_fuzzed_formats_are_readable_when_intact(tmp_path):
    for fmt, data in VALID.items():
        path = tmp_path / f"ok.{fmt.lower()}"
        path.write_bytes(data)
        assert read_image(path).shape == (24, 32, 3)


@pytest.mark.parametrize("ext", ["png", "jpeg"])
def test_a_zero_byte_file_is_named(tmp_path, ext):
    (tmp_path / f"z.{ext}").write_bytes(b"")
    with pytest.raises(DataError, match="empty"):
        read_image(tmp_path / f"z.{ext}")
