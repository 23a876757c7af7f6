import numpy as np
import pytest
import torch

from samsp.inference.preprocess import postprocess, preprocess, resize_mask, resized_shape
from samsp.modeling.backbones import get_backbone


@pytest.mark.parametrize("hw", [(530, 622), (1072, 1920), (352, 332), (37, 500), (256, 256), (1, 1)])
@pytest.mark.parametrize("name", ["litemedsam", "tiny"])
def test_postprocess_restores_the_exact_original_size(hw, name):
    backbone = get_backbone(name)
    image = np.random.default_rng(0).integers(0, 256, (*hw, 3), dtype=np.uint8)
    x, frame = preprocess(image, backbone)
    assert x.shape == (3, backbone.img_size, backbone.img_size)
    assert frame.original_hw == hw
    assert max(frame.resized_hw) == backbone.img_size
    logits = torch.randn(backbone.img_size, backbone.img_size)
    assert postprocess(logits, frame).shape == hw


def test_padding_is_zero_and_the_image_region_is_normalised():
    image = np.full((100, 200, 3), 128, dtype=np.uint8)
    image[:50] = 10
    x, frame = preprocess(image, get_backbone("litemedsam"))  # min-max normalisation to [0, 1]
    h, w = frame.resized_hw
    assert (h, w) == (128, 256)
    assert x[:, h:, :].abs().sum() == 0
    assert float(x[:, :h, :w].min()) == 0.0 and float(x[:, :h, :w].max()) == 1.0


def test_mask_round_trip_keeps_its_shape_and_place():
    mask = np.zeros((300, 400), dtype=bool)
    mask[100:200, 50:150] = True
    backbone = get_backbone("litemedsam")
    small = resize_mask(mask, backbone.img_size)
    assert tuple(small.shape) == resized_shape(300, 400, 256)
    logits = torch.full((256, 256), -10.0)
    logits[: small.shape[0], : small.shape[1]][small] = 10.0
    _, frame = preprocess(np.zeros((300, 400, 3), np.uint8), backbone)
    back = postprocess(logits, frame) > 0
    assert back.shape == (300, 400)
    inter = (back.numpy() & mask).sum()
    assert 2 * inter / (back.numpy().sum() + mask.sum()) > 0.98
