"""`samsp predict` at scale: streamed, resumable after kill -9, sharded across processes, safe on a full disk."""

import errno
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import child_env, ellipse_pair, kill_when_busy
from PIL import Image

from samsp import Predictor, SamSP
from samsp.cli import main
from samsp.data.io import read_image
from samsp.inference.bulk import PARTS_DIR, predict_files

N = 40


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    root, rng = tmp_path_factory.mktemp("frames"), np.random.default_rng(3)
    for i in range(N):
        image, _ = ellipse_pair(int(rng.integers(60, 120)), int(rng.integers(60, 120)), rng)
        Image.fromarray(image).save(root / f"frame_{i:03d}.png")
    return root


@pytest.fixture(scope="module")
def reference(images, tiny_model_dir, tmp_path_factory) -> Path:
    """One uninterrupted single-process run."""
    out = tmp_path_factory.mktemp("reference")
    predict_files(Predictor(SamSP.from_pretrained(tiny_model_dir), batch_size=4), [images], out)
    return out


def predict_command(model: Path, images: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "samsp.cli", "predict", "--model", str(model), str(images), "--out", str(out)]


def assert_same_outputs(out: Path, reference: Path) -> None:
    rows = (out / "predictions.csv").read_text().splitlines()
    assert rows == (reference / "predictions.csv").read_text().splitlines()  # every image once, in input order
    for mask in sorted((reference / "masks").iterdir()):
        assert np.array_equal(np.asarray(Image.open(out / "masks" / mask.name)), np.asarray(Image.open(mask)))
    for folder in ("masks", "overlays"):
        assert len(list((out / folder).iterdir())) == N  # no temporary file left behind


def started_writing(out: Path) -> bool:
    return (out / PARTS_DIR).is_dir() and part_rows(out) > 0


def part_rows(out: Path) -> int:
    return sum(len(p.read_text().splitlines()) - 1 for p in (out / PARTS_DIR).glob("*.csv"))


def test_rows_are_written_as_each_image_finishes_and_match_the_predictor(images, tiny_model_dir, reference):
    predictor = Predictor(SamSP.from_pretrained(tiny_model_dir))
    rows = (reference / "predictions.csv").read_text().splitlines()
    assert len(rows) == N + 1 and rows[0].startswith("image,mask,score,fallback,foreground")
    assert part_rows(reference) == N
    for name in ("frame_000", "frame_017", "frame_039"):
        expected = predictor.predict(read_image(images / f"{name}.png")).mask
        written = np.asarray(Image.open(reference / "masks" / f"{name}.png")) > 127
        assert np.array_equal(written, expected)


def test_a_rerun_skips_finished_images(images, tiny_model_dir, reference, tmp_path):
    out = tmp_path / "out"
    predictor = Predictor(SamSP.from_pretrained(tiny_model_dir), batch_size=4)
    first = predict_files(predictor, sorted(images.iterdir())[:15], out)
    assert len(first) == 15
    calls = []
    real = predictor.predict_batch
    predictor.predict_batch = lambda batch: calls.append(len(batch)) or real(batch)
    predict_files(predictor, [images], out)
    assert sum(calls) == N - 15
    assert_same_outputs(out, reference)


def test_kill_9_at_random_moments_then_the_same_command_completes(images, tiny_model_dir, reference, tmp_path):
    out, rng, kills = tmp_path / "out", random.Random(11), 0
    command = predict_command(tiny_model_dir, images, out)
    for _ in range(6):
        child = subprocess.Popen(command, env=child_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if not kill_when_busy(child, lambda: started_writing(out), rng.uniform(0.0, 0.6)):
            break  # it finished before the next kill
        kills += 1
        for png in (out / "masks").glob("*.png"):  # never a truncated PNG, whenever the kill came
            Image.open(png).load()
    assert kills >= 3, f"only {kills} kills landed inside the run"
    done = subprocess.run(command, env=child_env(), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert_same_outputs(out, reference)
    assert part_rows(out) == N  # no image recorded twice


def test_processes_split_the_inputs_and_the_last_one_merges(images, tiny_model_dir, reference, tmp_path):
    out = tmp_path / "out"
    command = predict_command(tiny_model_dir, images, out)
    children = [
        subprocess.Popen(command, env=child_env(RANK=str(r), WORLD_SIZE="2"), stdout=subprocess.PIPE, text=True)
        for r in range(2)
    ]
    outputs = [c.communicate(timeout=300)[0] for c in children]
    assert [c.returncode for c in children] == [0, 0]
    assert sorted(p.name for p in (out / PARTS_DIR).iterdir()) == ["00000.csv", "00001.csv"]
    assert all(len(p.read_text().splitlines()) == N // 2 + 1 for p in (out / PARTS_DIR).iterdir())
    assert any(f"wrote {N} masks to" in o for o in outputs)
    assert_same_outputs(out, reference)


def test_torchrun_shards_prediction(images, tiny_model_dir, reference, tmp_path):
    out = tmp_path / "out"
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    command = [*launcher, "-m", "samsp.cli", *predict_command(tiny_model_dir, images, out)[3:]]
    done = subprocess.run(command, env=child_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert len(list((out / PARTS_DIR).iterdir())) == 2
    assert_same_outputs(out, reference)


def test_a_full_disk_while_writing_a_mask_is_one_error_and_a_rerun_completes(
    images, tiny_model_dir, reference, tmp_path, monkeypatch, capsys
):
    out, real_save, calls = tmp_path / "out", Image.Image.save, {"n": 0}

    def save_until_the_disk_fills(self, fp, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 23:
            Path(fp).write_bytes(b"\x89PNG partial")  # a partly written file, as a real full disk leaves
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(self, fp, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "save", save_until_the_disk_fills)
    command = ["predict", "--model", str(tiny_model_dir), str(images), "--out", str(out)]
    assert main(command) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"samsp: error: {out}") and "No space left on device" in err and "\n" not in err
    assert not list(out.rglob(".*.tmp-*"))
    for png in (out / "masks").glob("*.png"):
        Image.open(png).load()
    assert 0 < part_rows(out) < N
    monkeypatch.setattr(Image.Image, "save", real_save)
    assert main(command) == 0
    assert_same_outputs(out, reference)


def test_inputs_from_a_list_file(images, tiny_model_dir, tmp_path, capsys):
    listing = tmp_path / "frames.txt"
    listing.write_text("# three frames\n" + "\n".join(str(images / f"frame_00{i}.png") for i in range(3)) + "\n")
    assert main(["predict", "--model", str(tiny_model_dir), str(listing), "--out", str(tmp_path / "out")]) == 0
    assert len((tmp_path / "out" / "predictions.csv").read_text().splitlines()) == 4
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing\n")
    assert main(["predict", "--model", str(tiny_model_dir), str(empty), "--out", str(tmp_path / "o2")]) == 2
    assert capsys.readouterr().err.strip().endswith(f"{empty}: the list holds no image paths")
