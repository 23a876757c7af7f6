"""The `samsp` command end to end on the tiny backbone: train, evaluate, predict, export, check-data, errors."""

import json
import shutil

import numpy as np
import pytest
import torch
from helpers import make_dataset
from PIL import Image

from samsp.cli import main


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("data"), n=8)


def tiny_train(data, out, *extra) -> list[str]:
    """`samsp train` arguments for a fast, deterministic run on the tiny backbone."""
    fast = ["--backbone", "tiny", "--set", "runtime.threads=1", "--set", "runtime.mixed_precision=no"]
    return ["train", "--data", str(data), "--out", str(out), *fast, *extra]


@pytest.fixture(scope="module")
def run(dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "run"
    assert main(tiny_train(dataset, out, "--epochs", "2")) == 0
    return out


def test_train_evaluate_predict_export(run, dataset, tmp_path, capsys, monkeypatch):
    assert (run / "best" / "weights.safetensors").is_file()

    assert main(["evaluate", "--model", str(run), "--data", str(dataset), "--out", str(tmp_path / "ev")]) == 0
    summary = json.loads((tmp_path / "ev" / "summary.json").read_text())
    assert summary["n_images"] == 8 and 0 <= summary["mDice"] <= 1
    assert "pooled_dice" in capsys.readouterr().out
    rows = (tmp_path / "ev" / "per_image.csv").read_text().splitlines()
    assert len(rows) == 9 and rows[0].startswith("id,dice,iou")

    assert main(["predict", "--model", str(run), str(dataset / "images"), "--out", str(tmp_path / "pr")]) == 0
    for i in range(8):
        image = Image.open(dataset / "images" / f"case_{i:02d}.png")
        mask = Image.open(tmp_path / "pr" / "masks" / f"case_{i:02d}.png")
        assert mask.size == image.size and mask.mode == "L"
        assert set(np.unique(np.asarray(mask))) <= {0, 255}
        assert (tmp_path / "pr" / "overlays" / f"case_{i:02d}.png").is_file()
    assert len((tmp_path / "pr" / "predictions.csv").read_text().splitlines()) == 9

    assert main(["export", "--model", str(run), "--out", str(tmp_path / "ex")]) == 0
    meta = json.loads((tmp_path / "ex" / "samsp.json").read_text())
    assert meta["format"] == "full" and meta["merge_max_abs_prob_diff"] < 1e-4
    assert (
        main(
            [
                "predict",
                "--model",
                str(tmp_path / "ex"),
                str(dataset / "images" / "case_03.png"),
                "--out",
                str(tmp_path / "pr2"),
            ]
        )
        == 0
    )
    a = np.asarray(Image.open(tmp_path / "pr" / "masks" / "case_03.png"))
    b = np.asarray(Image.open(tmp_path / "pr2" / "masks" / "case_03.png"))
    assert (a == b).mean() > 0.999  # the merged export predicts the same mask

    image = str(dataset / "images" / "case_03.png")
    from samsp.training import hardware

    monkeypatch.setattr(hardware, "cpu_bf16_speedup", lambda: 0.013)  # what an AVX2 CPU measures (no bf16 units)
    capsys.readouterr()
    assert main(["predict", "--model", str(run), image, "--out", str(tmp_path / "bf"), "--precision", "bf16"]) == 0
    assert "samsp: warning: bf16 was asked for, but this CPU computes" in capsys.readouterr().err
    c = np.asarray(Image.open(tmp_path / "bf" / "masks" / "case_03.png"))
    assert (a == c).mean() > 0.98  # bf16 autocast changes at most a few boundary pixels


def test_evaluate_any_folder_of_predicted_masks(dataset, tmp_path):
    assert (
        main(
            [
                "evaluate",
                "--pred",
                str(dataset / "masks"),
                "--gt",
                str(dataset / "masks"),
                "--out",
                str(tmp_path / "ev"),
            ]
        )
        == 0
    )
    summary = json.loads((tmp_path / "ev" / "summary.json").read_text())
    assert summary["mDice"] == pytest.approx(1.0)


def test_resume_from_the_cli(run, tmp_path, capsys):
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    config = (copy / "config.yaml").read_text().replace("epochs: 2", "epochs: 3")
    (copy / "config.yaml").write_text(config)
    assert main(["train", "--resume", str(copy)]) == 0
    assert len((copy / "metrics.csv").read_text().splitlines()) == 4


def test_check_data_lists_every_problem_and_fails(dataset, tmp_path, capsys):
    bad = tmp_path / "bad"
    shutil.copytree(dataset, bad)
    (bad / "images" / "case_01.png").write_bytes(b"")
    Image.new("L", (5, 5)).save(bad / "masks" / "case_02.png")
    assert main(["check-data", str(bad)]) == 1
    out = capsys.readouterr().out
    assert "case_01.png" in out and "case_02.png" in out and "2 problem(s)" in out


@pytest.mark.parametrize(
    ("make_args", "expected"),
    [
        (lambda d, t: tiny_train(t / "missing", t / "r"), "missing"),
        (
            lambda d, t: ["predict", "--model", str(t / "nothing"), str(d / "images"), "--out", str(t / "p")],
            "model folder not found",
        ),
        (lambda d, t: tiny_train(d, t / "r", "--set", "optim.lrate=1"), "unknown setting 'optim.lrate'"),
        (lambda d, t: tiny_train(d, t / "r", "--backbone", "vit_q"), "setting model.backbone: expected one of"),
    ],
)
def test_user_errors_are_one_line_with_exit_code_2(dataset, tmp_path, capsys, make_args, expected):
    assert main(make_args(dataset, tmp_path)) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("samsp: error:") and expected in err
    assert "Traceback" not in err and len(err.splitlines()) == 1


def test_image_without_mask_names_the_file_and_writes_nothing(dataset, tmp_path, capsys):
    data = tmp_path / "d"
    shutil.copytree(dataset, data)
    (data / "masks" / "case_05.png").unlink()
    out = tmp_path / "run"
    assert main(tiny_train(data, out, "--epochs", "1")) == 2
    assert "case_05" in capsys.readouterr().err
    assert not (out / "best").exists() and not (out / "last").exists()


def test_corrupt_image_is_named_before_training_starts(dataset, tmp_path, capsys):
    data = tmp_path / "d"
    shutil.copytree(dataset, data)
    raw = (data / "images" / "case_04.png").read_bytes()
    (data / "images" / "case_04.png").write_bytes(raw[: len(raw) // 2])
    out = tmp_path / "run"
    assert main(tiny_train(data, out, "--epochs", "1")) == 2
    [error] = [line for line in capsys.readouterr().err.splitlines() if line.startswith("samsp: error:")]
    assert error.startswith("samsp: error: 1 of ") and "case_04.png" in error and "truncated" in error  # one line
    assert not (out / "last").exists()


def test_checkpoint_for_another_backbone_is_refused(dataset, tmp_path, capsys):
    wrong = tmp_path / "other.pth"
    torch.save({"image_encoder.patch_embed.proj.weight": torch.zeros(1)}, wrong)
    assert main(tiny_train(dataset, tmp_path / "r", "--checkpoint", str(wrong), "--epochs", "1")) == 2
    err = capsys.readouterr().err
    assert "other.pth" in err and "not a tiny checkpoint" in err


def test_debug_shows_the_traceback(dataset, tmp_path):
    from samsp.errors import SamspError

    with pytest.raises(SamspError):
        main(["--debug", "predict", "--model", str(tmp_path / "nothing"), str(dataset), "--out", str(tmp_path)])


def test_one_set_of_data_options_for_train_evaluate_and_check_data(run, dataset, tmp_path, capsys):
    rows = ["image,mask"] + [f"images/case_{i:02d}.png,masks/case_{i:02d}.png" for i in range(4)]
    (dataset / "pairs.csv").write_text("\n".join(rows) + "\n")
    csv = str(dataset / "pairs.csv")
    assert main(["check-data", "--csv", csv]) == 0
    assert "4 pairs checked, 0 problem(s)" in capsys.readouterr().out
    assert main(["evaluate", "--model", str(run), "--csv", csv, "--out", str(tmp_path / "ev")]) == 0
    assert json.loads((tmp_path / "ev" / "summary.json").read_text())["n_images"] == 4
    assert main(["check-data", "--data", str(dataset)]) == 0  # the folder also works as --data


def test_a_csv_row_without_a_mask_stops_training_with_one_line(dataset, tmp_path, capsys):
    csv = tmp_path / "pairs.csv"
    csv.write_text(
        f"image,mask\n{dataset}/images/case_00.png,{dataset}/masks/case_00.png\n{dataset}/images/case_01.png,\n"
    )
    assert main(["train", "--csv", str(csv), "--out", str(tmp_path / "r"), "--backbone", "tiny"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"samsp: error: {csv}: line 3: empty mask cell") and "\n" not in err
    assert not (tmp_path / "r").exists()
