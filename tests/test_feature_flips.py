"""Mirror flips of cached prefix features (data.cached_flips): alignment with the mask, seeding, the setting."""

import pytest
import torch
from helpers import make_dataset

from samsp import train
from samsp.config import DataConfig, ModelConfig
from samsp.data.prepared import PreparedSet
from samsp.errors import SamspError
from samsp.modeling.backbones import channels_first
from samsp.modeling.sam_sp import SamSP
from samsp.training.batches import Batches
from samsp.training.feature_flips import draw, flip_sample

SIZE, CELLS = 32, 8  # a 32 px frame whose features lie on an 8x8 grid (4 px per cell)


def _labelled(valid_h: int, valid_w: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A (CELLS, CELLS, 2) grid whose cell (r, c) holds (r, c), and a mask whose pixels hold their cell's r*CELLS+c,
    both zero in the padding outside the valid region."""
    r, c = torch.meshgrid(torch.arange(CELLS), torch.arange(CELLS), indexing="ij")
    grid = torch.stack([r, c], dim=-1).float()
    mask = (r * CELLS + c).float().repeat_interleave(SIZE // CELLS, 0).repeat_interleave(SIZE // CELLS, 1)
    mask[valid_h:] = 0
    mask[:, valid_w:] = 0
    return grid, mask


def _as_layout(grid: torch.Tensor, layout: str) -> torch.Tensor:
    if layout == "tokens":
        return grid.reshape(-1, 2)
    return grid.permute(2, 0, 1).contiguous() if layout == "chw" else grid


def _from_layout(features: torch.Tensor, layout: str) -> torch.Tensor:
    if layout == "tokens":
        return features.reshape(CELLS, CELLS, 2)
    return features.permute(1, 2, 0) if layout == "chw" else features


@pytest.mark.parametrize("layout", ["hwc", "chw", "tokens"])
@pytest.mark.parametrize(("horizontal", "vertical"), [(True, False), (False, True), (True, True)])
def test_flipped_features_stay_aligned_with_the_flipped_mask_inside_the_valid_region(layout, horizontal, vertical):
    grid, mask = _labelled(24, 32)  # a landscape image: its bottom 8 rows (2 cells) are padding
    features, flipped_mask = flip_sample(
        _as_layout(grid, layout), mask, torch.tensor([24, 32]), layout, horizontal, vertical
    )
    out = _from_layout(features, layout)
    assert features.shape == _as_layout(grid, layout).shape
    # every valid pixel of the flipped mask names the cell whose features now lie under it
    for y in range(24):
        for x in range(32):
            r, c = y // 4, x // 4
            assert flipped_mask[y, x] == out[r, c, 0] * CELLS + out[r, c, 1], (y, x)
    assert (flipped_mask[24:] == 0).all() and torch.equal(out[6:], grid[6:])  # padding stays where it was
    twice, back = flip_sample(features, flipped_mask, torch.tensor([24, 32]), layout, horizontal, vertical)
    assert torch.equal(_from_layout(twice, layout), grid) and torch.equal(back, mask)


def test_a_valid_region_between_cells_is_mirrored_to_within_one_cell():
    grid, mask = _labelled(22, 32)  # 22 px: 5.5 cells, rounded up to 6
    features, flipped_mask = flip_sample(grid, (mask > 0).float(), torch.tensor([22, 32]), "hwc", False, True)
    assert torch.equal(features[:6], grid[:6].flip(0)) and torch.equal(features[6:], grid[6:])
    assert torch.equal(flipped_mask[:22], (mask[:22] > 0).float().flip(0)) and (flipped_mask[22:] == 0).all()


def test_no_flip_returns_the_sample_unchanged():
    grid, mask = _labelled(32, 32)
    features, same = flip_sample(grid, mask, torch.tensor([32, 32]), "hwc", False, False)
    assert features is grid and same is mask


def test_the_draw_depends_only_on_its_seed_and_follows_the_probability():
    assert draw(0.5, 7) == draw(0.5, 7)
    assert draw(0.0, 7) == (False, False) and draw(1.0, 7) == (True, True)
    draws = [draw(0.5, seed) for seed in range(400)]
    assert 150 < sum(h for h, _ in draws) < 250 and 150 < sum(v for _, v in draws) < 250


def _batches(data: PreparedSet, model: SamSP, flips: float) -> Batches:
    return Batches(data, model, 1, seed=3, batch_size=1, device=torch.device("cpu"), dtype=torch.float32, flips=flips)


def test_cached_batches_flip_per_epoch_reproducibly_and_a_resumed_epoch_sees_the_same(tmp_path):
    from samsp.data.pairs import find_pairs

    model = SamSP(ModelConfig(backbone="tiny", adapt_stages=1)).eval()
    data = PreparedSet(find_pairs(make_dataset(tmp_path, n=6)), model.backbone)
    plain, flipped = _batches(data, model, 0.0), _batches(data, model, 0.5)
    assert plain.layout == "hwc"
    epochs = {e: list(flipped.epoch(e)) for e in range(3)}
    again = list(_batches(data, model, 0.5).epoch(1))
    assert all(torch.equal(a[k], b[k]) for a, b in zip(epochs[1], again, strict=True) for k in a)
    resumed = list(flipped.epoch(1, start_step=1))
    assert all(torch.equal(a[k], b[k]) for a, b in zip(epochs[1][1:], resumed, strict=True) for k in a)
    changed = [
        not torch.equal(f["mask"], p["mask"]) for e in range(3) for f, p in zip(epochs[e], plain.epoch(e), strict=True)
    ]
    assert any(changed) and not all(changed)  # some samples flipped, some not, varying by epoch
    for f, p in zip(epochs[0], plain.epoch(0), strict=True):
        assert f["mask"].sum() == p["mask"].sum() and torch.equal(f["valid_hw"], p["valid_hw"])


def test_the_setting_is_a_probability_and_says_so_in_one_line():
    with pytest.raises(SamspError, match=r"^data.cached_flips must be a probability in \[0, 1\]$"):
        DataConfig(cached_flips=1.5)


FAST = ["model.backbone=tiny", "optim.batch_size=4", "data.val_fraction=0.25", "runtime.threads=1"]
FAST += ["runtime.mixed_precision=no", "optim.epochs=1"]


def test_a_cached_run_with_flips_trains_deterministically_and_differs_from_one_without(tmp_path):
    from safetensors.torch import load_file

    data = make_dataset(tmp_path / "data", n=8)
    runs = [
        train(data=str(data), out=tmp_path / name, overrides=[*FAST, f"data.cached_flips={p}"])
        for name, p in (("a", 0.5), ("b", 0.5), ("plain", 0.0))
    ]
    a, b, plain = (load_file(str(r / "last" / "weights.safetensors")) for r in runs)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], plain[k]) for k in a)


def test_flips_without_a_cache_are_reported_as_having_no_effect(tmp_path):
    data = make_dataset(tmp_path / "data", n=8)
    run = train(data=str(data), out=tmp_path / "run", overrides=[*FAST, "data.cached_flips=0.5", "runtime.cache=false"])
    assert "data.cached_flips has no effect: nothing is cached" in (run / "train.log").read_text()


@pytest.mark.parametrize("backbone", ["tiny", "litemedsam"])
def test_every_prefix_length_names_the_layout_its_features_really_have(backbone):
    """Each cached prefix's output, viewed channels first by its named layout, is a square grid; after the whole
    encoder (the neck: what `model.strategy=frozen` caches) it is the image embedding, channels first."""
    model = SamSP(ModelConfig(backbone=backbone)).eval()
    size = model.backbone.img_size
    side = model.prompt_encoder.image_embedding_size[0]
    with torch.no_grad():
        x = torch.zeros(1, 3, size, size)
        for stages in range(1, len(model.stage_names) + 1):
            x = model.run_encoder(x, stages - 1, stages)
            grid = channels_first(x, model.features_layout(stages))
            assert grid.shape[-1] == grid.shape[-2] and size % grid.shape[-1] == 0, (stages, tuple(x.shape))
    assert grid.shape == (1, model.mask_decoder.transformer_dim, side, side)


def test_a_wholly_frozen_encoders_cache_is_mirrored_channels_first(tmp_path):
    """`model.strategy=frozen` caches the neck's output (C, H, W); both flips mirror its last two axes."""
    import math

    from samsp.data.pairs import find_pairs

    model = SamSP(ModelConfig(backbone="tiny", strategy="frozen")).eval()
    assert model.prefix_stages == len(model.stage_names)
    data = PreparedSet(find_pairs(make_dataset(tmp_path, n=4)), model.backbone)
    plain, flipped = _batches(data, model, 0.0), _batches(data, model, 1.0)
    for a, b in zip(plain.epoch(0), flipped.epoch(0), strict=True):
        features, stride = a["features"][0], model.backbone.img_size / a["features"].shape[-1]
        h, w = (math.ceil(int(v) / stride) for v in a["valid_hw"][0])
        assert features.shape == b["features"][0].shape == (model.mask_decoder.transformer_dim, 8, 8)
        assert torch.equal(b["features"][0][:, :h, :w], features[:, :h, :w].flip(-1).flip(-2))
