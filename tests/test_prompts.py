import pytest
import torch

from samsp.modeling.prompts import boxes_from_masks, full_boxes, valid_region


def test_one_blob_box_is_min_max_in_pixel_coordinates():
    m = torch.zeros(1, 10, 12, dtype=torch.bool)
    m[0, 2:5, 3:9] = True  # rows 2..4, columns 3..8
    boxes, empty = boxes_from_masks(m)
    assert boxes.tolist() == [[3.0, 2.0, 8.0, 4.0]]  # x0, y0, x1, y1
    assert empty.tolist() == [False]


def test_several_blobs_share_one_box():
    m = torch.zeros(1, 20, 20, dtype=torch.bool)
    m[0, 1, 2] = True
    m[0, 15:18, 11:19] = True
    boxes, _ = boxes_from_masks(m)
    assert boxes.tolist() == [[2.0, 1.0, 18.0, 17.0]]


def test_empty_mask_is_flagged_and_batch_rows_are_independent():
    m = torch.zeros(3, 8, 8, dtype=torch.bool)
    m[0, 7, 7] = True
    m[2, 0, 0] = True
    boxes, empty = boxes_from_masks(m)
    assert empty.tolist() == [False, True, False]
    assert boxes[0].tolist() == [7.0, 7.0, 7.0, 7.0]
    assert boxes[1].tolist() == [0.0, 0.0, 0.0, 0.0]
    assert boxes[2].tolist() == [0.0, 0.0, 0.0, 0.0]


def test_full_box_and_valid_region_follow_the_unpadded_size():
    valid = torch.tensor([[6, 8], [8, 5]])
    assert full_boxes(valid).tolist() == [[0.0, 0.0, 7.0, 5.0], [0.0, 0.0, 4.0, 7.0]]
    region = valid_region(valid, 8)
    assert region.shape == (2, 8, 8)
    assert region[0].sum() == 48 and not region[0, 6:].any()
    assert region[1].sum() == 40 and not region[1, :, 5:].any()


def test_box_needs_a_batch_of_2d_masks():
    with pytest.raises(ValueError, match="B, H, W"):
        boxes_from_masks(torch.zeros(4, 4, dtype=torch.bool))
