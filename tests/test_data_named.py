"""Named datasets without a network: the offline message, and download/verify/unpack through file:// URLs."""

from __future__ import annotations

import hashlib
import io
import json
import urllib.error
import urllib.request
import zipfile

import pytest
from PIL import Image

from samsp.data import DATASETS, fetch, find_pairs, named, read_id_list
from samsp.errors import DataError, SamspError


def _png_bytes(fill: int) -> bytes:
    buf = io.BytesIO()
    Image.new("L", (6, 4), fill).save(buf, format="PNG")
    return buf.getvalue()


def _zip(path, members: dict[str, bytes]) -> str:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def tiny(tmp_path, monkeypatch):
    """Register an ISIC-like two-archive dataset served from local zip files."""
    src = tmp_path / "server"
    src.mkdir()
    images = {f"Tiny_Input/T_{k}.jpg": _png_bytes(100) for k in range(3)}
    images["Tiny_Input/LICENSE.txt"] = b"licence"
    masks = {f"outer/Tiny_GT/T_{k}_segmentation.png": _png_bytes(255) for k in range(3)}
    hashes = (_zip(src / "tiny_input.zip", images), _zip(src / "tiny_gt.zip", masks))

    def register(expected=hashes):
        ds = named.NamedDataset(
            name="tiny",
            homepage="https://example.invalid/tiny",
            licence="test",
            archives=(
                named.Archive((src / "tiny_input.zip").as_uri(), expected[0], (named.Move("Tiny_Input", "images"),)),
                named.Archive(
                    (src / "tiny_gt.zip").as_uri(),
                    expected[1],
                    (named.Move("Tiny_GT", "masks", strip_suffix="_segmentation"),),
                ),
            ),
            pranet_split="kvasir",
        )
        monkeypatch.setitem(DATASETS, "tiny", ds)
        return ds

    return register


def test_fetch_verifies_unpacks_and_caches(tmp_path, tiny, monkeypatch):
    tiny()
    root = fetch("tiny", cache_dir=tmp_path / "cache")
    assert root == tmp_path / "cache" / "tiny"
    pairs = find_pairs(root)  # default layout works: masks lost their _segmentation suffix
    assert [(p.id, p.mask.name) for p in pairs] == [
        ("T_0", "T_0.png"),
        ("T_1", "T_1.png"),
        ("T_2", "T_2.png"),
    ]
    assert (root / "source" / "Tiny_Input" / "LICENSE.txt").read_text() == "licence"
    assert len(read_id_list(root / "splits" / "pranet_test.txt")) == 100
    marker = json.loads((root / ".complete.json").read_text())
    assert all(s["verified"] for s in marker["sources"])
    assert not list((tmp_path / "cache").glob(".tiny.*"))  # staging removed

    def no_network(*args, **kwargs):
        raise AssertionError("fetch should use the cache")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    assert fetch("tiny", cache_dir=tmp_path / "cache") == root


def test_fetch_unknown_hash_records_and_warns(tmp_path, tiny):
    tiny(expected=(None, None))
    with pytest.warns(UserWarning, match="could not be verified"):
        root = fetch("tiny", cache_dir=tmp_path / "cache")
    sidecar = tmp_path / "cache" / "downloads" / "tiny_input.zip.sha256"
    digest = hashlib.sha256((tmp_path / "server" / "tiny_input.zip").read_bytes()).hexdigest()
    assert sidecar.read_text().split()[0] == digest
    assert not json.loads((root / ".complete.json").read_text())["sources"][0]["verified"]


def test_fetch_hash_mismatch_deletes_download(tmp_path, tiny):
    tiny(expected=("0" * 64, None))
    with pytest.raises(SamspError, match="expected 0000"):
        fetch("tiny", cache_dir=tmp_path / "cache")
    assert not (tmp_path / "cache" / "downloads" / "tiny_input.zip").exists()
    assert not (tmp_path / "cache" / "tiny").exists()


def test_fetch_offline_message(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    monkeypatch.setenv("SAMSP_CACHE", str(tmp_path / "c"))
    url = DATASETS["kvasir-seg"].archives[0].url
    with pytest.raises(SamspError) as info:
        fetch("kvasir-seg")
    message = str(info.value)
    assert message.startswith(f"could not download kvasir-seg from {url} (")
    assert "name resolution" in message and "--data PATH/TO/FOLDER (with images/ and masks/)" in message
    assert not list((tmp_path / "c").rglob("*.part"))
    with pytest.raises(SamspError, match="_segmentation"):
        fetch("isic2018")


def test_fetch_timeout_is_offline_error(tmp_path, monkeypatch):
    def slow(*args, **kwargs):
        raise TimeoutError("timed out")

    monkeypatch.setattr(urllib.request, "urlopen", slow)
    with pytest.raises(SamspError, match="could not download .*kvasir-seg.*timed out"):
        fetch("kvasir-seg", cache_dir=tmp_path)


def test_bad_zip_and_unsafe_zip(tmp_path, tiny):
    ds = tiny(expected=(None, None))
    (tmp_path / "server" / "tiny_input.zip").write_bytes(b"not a zip")
    with pytest.warns(UserWarning), pytest.raises(DataError, match="tiny_input.zip: not a valid zip"):
        fetch("tiny", cache_dir=tmp_path / "cache")
    _zip(tmp_path / "server" / "tiny_input.zip", {"../escape.jpg": b"x"})
    with pytest.warns(UserWarning), pytest.raises(DataError, match="outside the target folder"):
        fetch(ds.name, cache_dir=tmp_path / "cache2")
    assert not (tmp_path / "escape.jpg").exists()


def test_unknown_name_and_registry():
    with pytest.raises(SamspError, match="unknown dataset 'nope'; known: isic2018, kvasir-seg"):
        fetch("nope")
    assert all(a.url.startswith("https://") for ds in DATASETS.values() for a in ds.archives)


def test_default_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("SAMSP_CACHE", str(tmp_path))
    assert named.default_cache_dir() == tmp_path / "datasets"
    monkeypatch.delenv("SAMSP_CACHE")
    assert named.default_cache_dir().parts[-3:] == (".cache", "samsp", "datasets")


def test_cvc_frames_map_to_the_29_video_sequences_of_the_dataset_readme():
    from samsp.data.named import cvc_sequence, pranet_split

    assert [cvc_sequence(i) for i in ("1", "25", "26", "200", "205", "206", "591", "592", "612")] == [
        1, 1, 2, 10, 10, 11, 28, 29, 29,
    ]  # fmt: skip
    assert sorted({cvc_sequence(str(i)) for i in range(1, 613)}) == list(range(1, 30))
    train, test = pranet_split("cvc")
    assert all(1 <= cvc_sequence(i) <= 29 for i in train + test)
    for bad in ("0", "613", "frame_12"):
        with pytest.raises(SamspError, match=rf"^CVC-ClinicDB frame ids are numbers 1-612, got '{bad}'$"):
            cvc_sequence(bad)
