"""Scoring any number of images in bounded memory: a folder or a list of pairs is decoded, predicted and scored in
parts, with the figures of one pass; bad files anywhere are one error; allocations that would not fit are one error."""

import csv
import re

import numpy as np
import psutil
import pytest
import torch
from helpers import make_dataset

from samsp import ModelConfig, Predictor, SamSP
from samsp.cli import main
from samsp.data.pairs import find_pairs
from samsp.errors import SamspError
from samsp.evaluation import evaluate as evaluate_module
from samsp.evaluation.evaluate import (
    PART_SIZE,
    evaluate,
    evaluate_predictor,
    load_eval_set,
    predict_set,
    prefix_features,
)
from samsp.training import batches as batches_module


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return SamSP(ModelConfig(backbone="tiny", adapt_stages=1))  # a frozen prefix of 2 stages


@pytest.fixture
def parts_of_three(monkeypatch):
    """The sizes of the sets load_eval_set decodes (the tests score in parts of 3)."""
    decoded = []
    real = evaluate_module.load_eval_set
    monkeypatch.setattr(evaluate_module, "load_eval_set", lambda pairs, m: decoded.append(len(pairs)) or real(pairs, m))
    return decoded


def dice_by_id(folder) -> dict[str, float]:
    with (folder / "per_image.csv").open(newline="") as handle:
        return {row["id"]: float(row["dice"]) for row in csv.DictReader(handle)}


def short_memory(monkeypatch, available: int = 1000) -> None:
    monkeypatch.setattr(psutil, "virtual_memory", lambda: type("Memory", (), {"available": available})())


def test_a_folder_is_scored_in_parts_with_the_figures_of_one_pass(model, tmp_path, parts_of_three, samsp_log):
    data_dir = make_dataset(tmp_path / "d", n=7)
    whole = load_eval_set(find_pairs(data_dir), model)  # one set of 7, scored in one pass
    evaluate(model, whole, tmp_path / "whole")
    parts_of_three.clear()
    summary = evaluate(model, data_dir, tmp_path / "parts", part_size=3)
    assert parts_of_three == [3, 3, 1]
    assert "scoring images 4-6 of 7" in samsp_log.text
    expected = dice_by_id(tmp_path / "whole")
    assert list(dice_by_id(tmp_path / "parts")) == list(expected)  # every image, in the folder's order
    assert dice_by_id(tmp_path / "parts") == pytest.approx(expected, abs=1e-6)
    assert summary["mDice"] == pytest.approx(np.mean(list(expected.values())), abs=1e-6)
    evaluate_predictor(Predictor(model), find_pairs(data_dir), tmp_path / "engine", part_size=3)  # ONNX engines' path
    assert dice_by_id(tmp_path / "engine") == pytest.approx(expected, abs=1e-4)


@pytest.mark.parametrize("bad", [(1, 6), (6,)], ids=["first and last part", "last part only"])
def test_bad_files_in_any_part_are_one_error_listing_them_all_before_any_work(
    model, tmp_path, parts_of_three, monkeypatch, bad
):
    data_dir = make_dataset(tmp_path / "d", n=7)
    pairs = find_pairs(data_dir)
    for i in bad:
        pairs[i].image.write_bytes(b"not an image")
    predicted = []
    real = evaluate_module.predict_set
    monkeypatch.setattr(
        evaluate_module, "predict_set", lambda m, d, **k: predicted.append(len(d.ids)) or real(m, d, **k)
    )
    for score in (
        lambda: evaluate(model, data_dir, tmp_path / "out", part_size=3),
        lambda: evaluate_predictor(Predictor(model), pairs, tmp_path / "out", part_size=3),
    ):
        with pytest.raises(SamspError) as raised:
            score()
        message = str(raised.value)
        assert message.startswith(f"{len(bad)} of 7 pairs cannot be used: ") and "\n" not in message
        assert all(pairs[i].image.name in message for i in bad)
        assert not (tmp_path / "out").exists()
    assert parts_of_three == [] and predicted == []  # found before any part was decoded for scoring


def test_scoring_that_would_not_fit_the_free_memory_is_one_error_before_the_work(model, tmp_path, monkeypatch):
    pairs = find_pairs(make_dataset(tmp_path / "d", n=3))
    data = load_eval_set(pairs, model)
    size = model.backbone.img_size
    cases = [
        (lambda: load_eval_set(pairs, model), rf"decoding 3 images needs about 0\.0 GB \(3x{size}x{size} float32 "),
        (
            lambda: prefix_features(model, data),
            r"keeping the frozen prefix of every image needs about 0\.0 GB \(3 x \(",
        ),
        (lambda: predict_set(model, data), r"predicting the probability maps of 3 images needs about 0\.0 GB \("),
    ]
    for work, start in cases:
        with monkeypatch.context() as m, pytest.raises(SamspError) as raised:
            short_memory(m)
            work()
        message = str(raised.value)
        assert "\n" not in message and re.match(start, message), message
        assert message.endswith("of memory is free: " + evaluate_module.SMALLER_SET)


def test_features_kept_from_a_training_give_way_to_scoring(model, tmp_path, monkeypatch, samsp_log):
    monkeypatch.setattr(batches_module, "_PREFIX_MEMO", type(batches_module._PREFIX_MEMO)())
    batches_module._PREFIX_MEMO[("earlier training",)] = (2, [torch.zeros(4)], [])
    monkeypatch.setattr(  # short of memory while the features are kept, enough once they are dropped
        psutil,
        "virtual_memory",
        lambda: type("Memory", (), {"available": 1000 if batches_module._PREFIX_MEMO else 10**12})(),
    )
    evaluate(model, make_dataset(tmp_path / "d", n=3), tmp_path / "ev")
    assert not batches_module._PREFIX_MEMO
    assert "dropped the prefix features kept from earlier trainings" in samsp_log.text
    assert len(dice_by_id(tmp_path / "ev")) == 3


def test_many_bad_files_are_one_line_that_counts_them_all_and_names_the_first_five(model, tmp_path):
    data_dir = make_dataset(tmp_path / "d", n=8)
    pairs = find_pairs(data_dir)
    for pair in pairs[:7]:
        pair.image.write_bytes(b"not an image")
    with pytest.raises(SamspError) as raised:
        evaluate(model, data_dir, tmp_path / "out", part_size=3)
    message = str(raised.value)
    assert "\n" not in message and message.startswith("7 of 8 pairs cannot be used: ")
    assert [pair.image.name in message for pair in pairs[:7]] == [True] * 5 + [False] * 2
    assert message.endswith("; and 2 more (samsp check-data lists every one)")
    assert not (tmp_path / "out").exists()


def test_samsp_evaluate_part_size(model, tmp_path, capsys, samsp_log):
    saved = model.save_pretrained(tmp_path / "model")
    data_dir = make_dataset(tmp_path / "d", n=7)
    command = ["evaluate", "--model", str(saved), "--data", str(data_dir), "--out"]
    assert main([*command, str(tmp_path / "parts"), "--part-size", "3"]) == 0
    assert "scoring images 7-7 of 7" in samsp_log.text
    said = [r.getMessage() for r in samsp_log.records if "frozen" in r.getMessage() or "prefix" in r.getMessage()]
    assert len(said) == 1, said  # the prefix engine is chosen and said once for the set, not once per part
    assert main([*command, str(tmp_path / "whole")]) == 0  # the default: one part of 7
    assert dice_by_id(tmp_path / "parts") == pytest.approx(dice_by_id(tmp_path / "whole"), abs=1e-6)

    capsys.readouterr()
    assert main([*command, str(tmp_path / "zero"), "--part-size", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "samsp: error: the part size (images scored at a time) must be a whole number >= 1, got 0"
    assert not (tmp_path / "zero").exists()

    with pytest.raises(SystemExit):
        main(["evaluate", "--help"])
    assert f"(default: {PART_SIZE})" in " ".join(capsys.readouterr().out.split())
