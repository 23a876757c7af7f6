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


def test_opening_drops_thin_stray_blobs_but_never_empties_a_mask():
    from samsp.modeling.prompts import open_masks

    m = torch.zeros(2, 20, 20, dtype=torch.bool)
    m[0, 5:12, 5:12] = True  # the object
    m[0, 18, 0:3] = True  # a stray 1-pixel-thin line that would widen the box
    m[1, 3, 3] = True  # only a speck: kept, not emptied
    opened = open_masks(m, 1)
    boxes, empty = boxes_from_masks(opened)
    assert boxes[0].tolist() == [5.0, 5.0, 11.0, 11.0] and not empty.any()
    assert torch.equal(opened[1], m[1]) and torch.equal(open_masks(m, 0), m)


def test_jittered_boxes_stay_ordered_inside_the_image_and_near_the_box():
    from samsp.modeling.prompts import jitter_boxes

    torch.manual_seed(0)
    boxes = torch.tensor([[10.0, 20.0, 49.0, 39.0]] * 64)
    valid = torch.tensor([[50, 60]] * 64)
    moved = jitter_boxes(boxes, 0.1, valid)
    assert (moved[:, 0] <= moved[:, 2]).all() and (moved[:, 1] <= moved[:, 3]).all()
    assert (moved >= 0).all() and (moved[:, 2] <= 59).all() and (moved[:, 3] <= 49).all()
    assert (moved - boxes).abs().max() <= 4.0 + 1e-5 and not torch.equal(moved, boxes)
    assert torch.equal(jitter_boxes(boxes, 0.0, valid), boxes)


def test_ground_truth_boxes_frame_the_label_and_an_empty_label_gets_the_whole_valid_region():
    from samsp.modeling.prompts import ground_truth_boxes

    masks = torch.zeros(2, 32, 32)
    masks[0, 4:10, 6:20] = 1
    valid = torch.tensor([[32, 32], [20, 24]])
    assert ground_truth_boxes(masks, valid).tolist() == [[6.0, 4.0, 19.0, 9.0], [0.0, 0.0, 23.0, 19.0]]
    torch.manual_seed(0)
    moved = ground_truth_boxes(masks, valid, jitter=0.2)
    assert not torch.equal(moved, ground_truth_boxes(masks, valid))
    assert (moved[0] - torch.tensor([6.0, 4.0, 19.0, 9.0])).abs().max() <= 0.2 * 14 + 1e-5
