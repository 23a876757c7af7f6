"""Pairing rules, split kinds and the dataset check, on generated folders and on the real data."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from samsp.data import (
    Pair,
    check_pairs,
    find_images,
    find_pairs,
    pranet_split,
    random_split,
    read_csv_pairs,
    read_id_list,
    select,
    write_split,
)
from samsp.errors import DataError, SamspError


def _img(path, size=(8, 6)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (50, 60, 70)).save(path)


def _mask(path, size=(8, 6), fill=255) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("L", size, fill).save(path)


def _dataset(root, names, masks):
    for n in names:
        _img(root / "images" / n)
    for n in masks:
        _mask(root / "masks" / n)
    return root


# ---------------------------------------------------------------- pairing rules
def test_same_stem_sorted(tmp_path):
    root = _dataset(tmp_path, ["b.png", "a.jpg", "c.bmp"], ["a.jpg", "b.png", "c.bmp"])
    pairs = find_pairs(root)
    assert [p.id for p in pairs] == ["a", "b", "c"]
    assert pairs[0] == Pair("a", root / "images" / "a.jpg", root / "masks" / "a.jpg")


def test_segmentation_suffix_isic_style(tmp_path):
    root = _dataset(
        tmp_path, ["ISIC_001.jpg", "ISIC_002.jpg"], ["ISIC_001_segmentation.png", "ISIC_002_segmentation.png"]
    )
    pairs = find_pairs(root, mask_suffix="_segmentation")
    assert [p.mask.name for p in pairs] == ["ISIC_001_segmentation.png", "ISIC_002_segmentation.png"]


def test_mask_suffix_and_other_folders(tmp_path):
    for n in ("x.tif", "y.TIFF"):
        _img(tmp_path / "img" / n)
    for n in ("x_mask.png", "y_mask.PNG"):
        _mask(tmp_path / "gt" / n)
    pairs = find_pairs(tmp_path, images_dir="img", masks_dir="gt", mask_suffix="_mask")
    assert [(p.id, p.mask.name) for p in pairs] == [("x", "x_mask.png"), ("y", "y_mask.PNG")]


def test_different_extensions_prefer_same_then_ambiguous(tmp_path):
    root = _dataset(tmp_path, ["a.jpg", "b.png"], ["a.png", "a.jpg", "b.jpg", "b.bmp"])
    with pytest.raises(DataError, match=r"b.png -> b.bmp, b.jpg"):
        find_pairs(root)  # a: same extension wins; b: two candidates, neither .png
    pairs = find_pairs(root, mask_ext="jpg")
    assert [p.mask.name for p in pairs] == ["a.jpg", "b.jpg"]
    with pytest.warns(UserWarning, match=r"a.jpg"):
        pairs = find_pairs(root, mask_ext=".BMP", on_unpaired="skip")
    assert [p.mask.name for p in pairs] == ["b.bmp"]


def test_unpaired_error_lists_all(tmp_path):
    root = _dataset(tmp_path, ["a.png", "b.png", "c.png", "d.png"], ["a.png", "c.png", "zz.png", "yy.png"])
    with pytest.raises(SamspError) as info:
        find_pairs(root)
    message = str(info.value)
    for name in ("b.png", "d.png", "zz.png", "yy.png"):
        assert name in message
    assert "2 image(s)" in message and "2 mask(s)" in message


def test_unpaired_skip_warns(tmp_path):
    root = _dataset(tmp_path, ["a.png", "b.png"], ["a.png", "orphan.png"])
    with pytest.warns(UserWarning, match=r"b.png.*orphan.png"):
        pairs = find_pairs(root, on_unpaired="skip")
    assert [p.id for p in pairs] == ["a"]


def test_hidden_and_non_image_files_ignored(tmp_path):
    root = _dataset(tmp_path, ["a.png"], ["a.png"])
    (root / "images" / "._a.png").write_bytes(b"\0")
    (root / "images" / "notes.txt").write_text("x")
    (root / "masks" / "Thumbs.db").write_bytes(b"\0")
    assert [p.id for p in find_pairs(root)] == ["a"]


def test_missing_folders(tmp_path):
    with pytest.raises(DataError, match=r"nope: folder not found; expected a dataset folder"):
        find_pairs(tmp_path / "nope")
    (tmp_path / "masks").mkdir()
    with pytest.raises(DataError, match=r"images: folder not found"):
        find_pairs(tmp_path)
    _img(tmp_path / "only" / "images" / "a.png")
    with pytest.raises(DataError, match=r"masks: folder not found"):
        find_pairs(tmp_path / "only")
    assert find_pairs(tmp_path / "only", masks_dir=None)[0].mask is None


def test_duplicate_image_ids(tmp_path):
    root = _dataset(tmp_path, ["a.png", "a.jpg"], ["a.png"])
    with pytest.raises(DataError, match=r"a \(a.jpg, a.png\)"):
        find_pairs(root)


def test_find_images(tmp_path):
    _img(tmp_path / "in" / "b.png")
    _img(tmp_path / "in" / "a.JPG")
    (tmp_path / "in" / "c.txt").write_text("x")
    _img(tmp_path / "in" / "sub" / "deep.png")
    _img(tmp_path / "single.bmp")
    found = find_images([tmp_path / "single.bmp", tmp_path / "in"])
    assert [p.name for p in found] == ["single.bmp", "a.JPG", "b.png"]
    with pytest.raises(DataError, match=r"c.txt: not an image file"):
        find_images([tmp_path / "in" / "c.txt"])
    with pytest.raises(DataError, match=r"missing.png: no such file"):
        find_images([tmp_path / "missing.png"])
    (tmp_path / "sub2").mkdir()
    with pytest.raises(DataError, match=r"sub2: folder has no image files"):
        find_images([tmp_path / "sub2"])


# ---------------------------------------------------------------- splits
def _pairs(ids):
    return [Pair(i, Path(f"{i}.png"), None) for i in ids]


def test_read_id_list_tolerant(tmp_path):
    path = tmp_path / "split.txt"
    path.write_text("# header\na\n\n  b.jpg  \nimages/c.PNG # trailing comment\nd.v2\na\n")
    with pytest.warns(UserWarning, match="duplicate"):
        assert read_id_list(path) == ["a", "b", "c", "d.v2"]
    (tmp_path / "blank.txt").write_text("# nothing\n\n")
    with pytest.raises(DataError, match="blank.txt: split file lists no ids"):
        read_id_list(tmp_path / "blank.txt")
    with pytest.raises(DataError, match="none.txt: split file not found"):
        read_id_list(tmp_path / "none.txt")


def test_select_reports_missing_ids():
    pairs = _pairs(["a", "b", "c"])
    assert [p.id for p in select(pairs, ["c", "a"], "s.txt")] == ["c", "a"]
    missing = [f"m{k:02d}" for k in range(12)]
    with pytest.raises(DataError) as info:
        select(pairs, ["a", *missing], "test_split.txt")
    message = str(info.value)
    assert message.startswith("test_split.txt: 12 of 13 ids")
    assert "m09" in message and "m10" not in message and "and 2 more" in message


def test_read_csv_pairs(tmp_path):
    _img(tmp_path / "imgs" / "a.png")
    _mask(tmp_path / "gts" / "a_gt.png")
    _img(tmp_path / "imgs" / "b.png")
    (tmp_path / "list.csv").write_text("image,mask\nimgs/a.png,gts/a_gt.png\nimgs/b.png,\n")
    pairs = read_csv_pairs(tmp_path / "list.csv")
    assert pairs == [
        Pair("a", tmp_path / "imgs/a.png", tmp_path / "gts/a_gt.png"),
        Pair("b", tmp_path / "imgs/b.png", None),
    ]
    sub = tmp_path / "elsewhere"
    sub.mkdir()
    (sub / "list.csv").write_text("image,mask\nimgs/a.png,gts/a_gt.png\n")
    assert read_csv_pairs(sub / "list.csv", root=tmp_path)[0].image == tmp_path / "imgs/a.png"
    (tmp_path / "bad.csv").write_text("image,mask\nimgs/x.png,gts/x.png\nimgs/a.png,gts/y.png\n")
    with pytest.raises(DataError) as info:
        read_csv_pairs(tmp_path / "bad.csv")
    assert "bad.csv: 3 listed file(s) do not exist" in str(info.value)
    assert all(n in str(info.value) for n in ("x.png", "y.png"))
    (tmp_path / "hdr.csv").write_text("img,label\na,b\n")
    with pytest.raises(DataError, match="hdr.csv: CSV header must contain"):
        read_csv_pairs(tmp_path / "hdr.csv")


def test_random_split_deterministic_and_disjoint():
    pairs = _pairs([f"id{k:03d}" for k in range(50)])
    train, val = random_split(pairs, 0.2, seed=7)
    assert len(val) == 10 and len(train) == 40
    assert {p.id for p in train}.isdisjoint({p.id for p in val})
    again = random_split(list(reversed(pairs)), 0.2, seed=7)
    assert again == (train, val)  # independent of input order
    assert random_split(pairs, 0.2, seed=8)[1] != val
    with pytest.raises(SamspError, match="val_fraction"):
        random_split(pairs, 1.0, seed=0)


def test_write_split_round_trip(tmp_path):
    pairs = _pairs(["x", "y"])
    out = tmp_path / "sub" / "val.txt"
    write_split(out, pairs)
    assert out.read_text() == "x\ny\n"
    assert read_id_list(out) == ["x", "y"]
    assert [p.name for p in out.parent.iterdir()] == ["val.txt"]  # no temp file left


def test_pranet_split_packaged():
    train, test = pranet_split("kvasir-seg")
    assert (len(train), len(test)) == (900, 100) and not set(train) & set(test)
    train, test = pranet_split("cvc")
    assert (len(train), len(test)) == (547, 62) and not set(train) & set(test)
    with pytest.raises(SamspError, match="no PraNet split"):
        pranet_split("etis")


# ---------------------------------------------------------------- checks
def test_check_pairs_reports_every_problem(tmp_path):
    root = tmp_path
    _img(root / "images" / "good.png")
    _mask(root / "masks" / "good.png")
    _img(root / "images" / "empty.png")
    _mask(root / "masks" / "empty.png", fill=0)
    _img(root / "images" / "small.png")
    _mask(root / "masks" / "small.png", size=(4, 4))
    (root / "images" / "zero.png").write_bytes(b"")
    _mask(root / "masks" / "zero.png")
    _img(root / "images" / "cut.png", size=(64, 64))
    _mask(root / "masks" / "cut.png", size=(64, 64))
    data = (root / "masks" / "cut.png").read_bytes()
    (root / "masks" / "cut.png").write_bytes(data[: len(data) // 2])
    pairs = find_pairs(root)
    for workers in (0, 2):
        report = check_pairs(pairs, workers=workers)
        assert report.n_pairs == 5 and not report.ok
        names = sorted(p.path.name for p in report.problems)
        assert names == ["cut.png", "small.png", "zero.png"]
        assert report.n_empty_masks == 1
        assert report.sizes == {"min_hw": (6, 8), "max_hw": (64, 64)}
        text = report.format()
        assert "3 problem(s)" in text and "1 empty mask(s)" in text and "small.png: mask is 4x4" in text


# ---------------------------------------------------------------- real data
def test_real_kvasir_pairs_and_pranet_selection(shared_data):
    root = shared_data / "kvasir-seg"
    pairs = find_pairs(root)
    assert len(pairs) == 1000
    for part, n in (("test", 100), ("train", 900)):
        split = root / "splits" / f"pranet_{part}.txt"
        assert len(select(pairs, read_id_list(split), split)) == n
    train, test = pranet_split("kvasir")
    assert set(train) == set(read_id_list(root / "splits" / "pranet_train.txt"))
    assert len(select(pairs, test, "packaged kvasir test")) == 100
    assert {p.id for p in select(pairs, train + test, "all")} == {p.id for p in pairs}
    for part in ("train", "val", "test"):
        split = root / "splits" / f"simulamet_{part}.txt"
        assert select(pairs, read_id_list(split), split)


def test_real_cvc_pairs_and_check(shared_data):
    root = shared_data / "cvc-clinicdb-256"
    pairs = find_pairs(root)
    assert len(pairs) == 609
    train, test = pranet_split("cvc-clinicdb")
    assert len(select(pairs, train, "cvc train")) == 547
    test_pairs = select(pairs, read_id_list(root / "splits" / "pranet_test.txt"), "cvc test")
    assert [p.id for p in test_pairs] == test
    report = check_pairs(test_pairs)
    assert report.ok and report.sizes == {"min_hw": (256, 256), "max_hw": (256, 256)}
    assert report.n_empty_masks == 0


def test_gif_ppm_and_webp_masks_pair_as_drive_and_stare_ship_them(tmp_path):
    root = tmp_path / "drive"
    for i, ext in enumerate((".gif", ".ppm", ".webp", ".pgm")):
        _img(root / "images" / f"{i:02d}_test.tif")
        (root / "masks").mkdir(exist_ok=True)
        mask = Image.new("L", (8, 6), 0)
        mask.paste(255, (2, 2, 6, 5))
        mask.save(root / "masks" / f"{i:02d}_test_mask{ext}", **({"lossless": True} if ext == ".webp" else {}))
    pairs = find_pairs(root, mask_suffix="_mask")
    assert [p.mask.suffix for p in pairs] == [".gif", ".ppm", ".webp", ".pgm"]
    assert check_pairs(pairs).ok
    from samsp.data import read_mask

    assert all(read_mask(p.mask).sum() == 12 for p in pairs)
    with pytest.warns(UserWarning, match="3 image"):
        only_gif = find_pairs(root, mask_suffix="_mask", mask_ext=".gif", on_unpaired="skip")
    assert [p.mask.name for p in only_gif] == ["00_test_mask.gif"]


def test_a_mask_folder_of_an_unread_format_says_so(tmp_path):
    root = _dataset(tmp_path / "d", ["a.png", "b.png"], [])
    (root / "masks").mkdir()
    for n in ("a", "b"):
        (root / "masks" / f"{n}.npy").write_bytes(b"\x93NUMPY")
    with pytest.raises(SamspError) as err:
        find_pairs(root)
    assert "holds 2 .npy file(s), a format samsp does not read" in str(err.value)


def test_a_multi_frame_file_is_refused_by_name(tmp_path):
    path = tmp_path / "anim.gif"
    frames = [Image.new("L", (8, 6), v) for v in (0, 255)]
    frames[0].save(path, save_all=True, append_images=frames[1:])
    from samsp.data import read_mask

    with pytest.raises(DataError, match=r"anim\.gif: has 2 frames"):
        read_mask(path)


def test_a_csv_row_without_a_mask_is_an_error_where_masks_are_needed(tmp_path):
    _img(tmp_path / "a.png")
    _mask(tmp_path / "a_m.png")
    _img(tmp_path / "b.png")
    (tmp_path / "pairs.csv").write_text("image,mask\na.png,a_m.png\nb.png,\n")
    assert read_csv_pairs(tmp_path / "pairs.csv")[1].mask is None  # unlabelled images are fine to predict
    with pytest.raises(DataError, match=r"pairs\.csv: line 3: empty mask cell"):
        read_csv_pairs(tmp_path / "pairs.csv", require_masks=True)
