import pytest
import torch
import torch.nn.functional as F

from samsp.config import LossConfig
from samsp.modeling.losses import bernoulli_kl, samsp_loss, soft_dice_loss, structure_loss


def test_kl_is_zero_when_the_passes_agree_and_positive_otherwise():
    torch.manual_seed(0)
    logits = torch.randn(2, 16, 16)
    assert bernoulli_kl(logits, logits.clone()).abs().item() < 1e-6
    assert bernoulli_kl(logits, logits + 1.0).item() > 0


def test_kl_matches_the_bernoulli_formula():
    s, t = torch.tensor([[[0.3]]]), torch.tensor([[[-1.2]]])
    ps, pt = torch.sigmoid(s), torch.sigmoid(t)
    expected = pt * torch.log(pt / ps) + (1 - pt) * torch.log((1 - pt) / (1 - ps))
    assert torch.allclose(bernoulli_kl(s, t), expected.mean(), atol=1e-6)
    # temperature softens both sides and rescales by T^2
    t2 = 2.0
    ps2, pt2 = torch.sigmoid(s / t2), torch.sigmoid(t / t2)
    expected2 = (pt2 * torch.log(pt2 / ps2) + (1 - pt2) * torch.log((1 - pt2) / (1 - ps2))) * t2**2
    assert torch.allclose(bernoulli_kl(s, t, t2), expected2.mean(), atol=1e-6)


def test_soft_dice_perfect_and_disjoint():
    target = torch.zeros(1, 8, 8)
    target[0, 2:6, 2:6] = 1
    perfect = target * 40 - 20
    assert soft_dice_loss(perfect, target).item() < 1e-3
    disjoint = -perfect
    assert soft_dice_loss(disjoint, target).item() > 0.9


def test_gradients_reach_the_student_pass_only_through_the_kl_term():
    torch.manual_seed(0)
    target = (torch.rand(2, 8, 8) > 0.5).float()
    y0 = torch.randn(2, 8, 8, requires_grad=True)
    y1 = torch.randn(2, 8, 8, requires_grad=True)
    loss, parts = samsp_loss([y0, y1], target, LossConfig(alpha=1.0, dice_first_pass=False))  # the paper's loss
    loss.backward()
    kl_grad = torch.autograd.grad(bernoulli_kl(y0, y1.detach()), y0)[0]
    assert torch.allclose(y0.grad, kl_grad, atol=1e-7)  # y0 gets exactly the KL gradient
    dice_grad = torch.autograd.grad(soft_dice_loss(y1, target), y1)[0]
    assert torch.allclose(y1.grad, dice_grad, atol=1e-7)  # the teacher gets Dice only (it is detached in KL)
    assert set(parts) == {"dice", "distill", "loss"}


def test_switches_turn_sam_sp_into_the_baselines():
    torch.manual_seed(0)
    target = (torch.rand(1, 8, 8) > 0.5).float()
    y0, y1 = torch.randn(1, 8, 8), torch.randn(1, 8, 8)
    dice_only = soft_dice_loss(y1, target)
    no_distill, _ = samsp_loss([y0, y1], target, LossConfig(distill=False, dice_first_pass=False))
    assert torch.allclose(no_distill, dice_only)
    single, _ = samsp_loss([y0], target, LossConfig())  # no self-prompting: Dice of the only pass
    assert torch.allclose(single, soft_dice_loss(y0, target))
    with_first, parts = samsp_loss([y0, y1], target, LossConfig(dice_first_pass=True, alpha=0.5))
    expected = dice_only + soft_dice_loss(y0, target) + 0.5 * bernoulli_kl(y0, y1)
    assert torch.allclose(with_first, expected) and "dice_pass0" in parts
    default, _ = samsp_loss([y0, y1], target, LossConfig(alpha=0.5))  # samsp's default supervises pass 0 too
    assert torch.allclose(default, expected)


def test_bce_term_corrects_confident_false_positives_that_dice_leaves_alone():
    target = torch.zeros(1, 8, 8)
    target[0, :4] = 1
    logits = torch.full((1, 8, 8), 8.0, requires_grad=True)  # every pixel foreground at p = 0.9997
    soft_dice_loss(logits, target).backward()
    dice_grad = logits.grad[0, 4:].abs().max().item()  # on the wrongly confident background half
    logits.grad = None
    loss, parts = samsp_loss([logits], target, LossConfig(bce=1.0))
    loss.backward()
    assert dice_grad < 1e-4  # Dice's gradient vanishes through the saturated sigmoid
    assert logits.grad[0, 4:].min().item() > 0.9 / 64  # BCE: (p - y) / pixels on every false positive
    expected = soft_dice_loss(logits, target) + F.binary_cross_entropy_with_logits(logits, target)
    assert torch.allclose(loss, expected) and "bce" in parts


def test_bce_also_supervises_the_first_pass_when_dice_does():
    torch.manual_seed(0)
    target = (torch.rand(1, 8, 8) > 0.5).float()
    y0, y1 = torch.randn(1, 8, 8), torch.randn(1, 8, 8)
    loss, _ = samsp_loss([y0, y1], target, LossConfig(dice_first_pass=True, distill=False, bce=0.5))
    bce = F.binary_cross_entropy_with_logits
    expected = soft_dice_loss(y1, target) + soft_dice_loss(y0, target) + 0.5 * (bce(y1, target) + bce(y0, target))
    assert torch.allclose(loss, expected)


def pranet_structure_loss(pred: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """PraNet's structure_loss as its train.py writes it ((B, 1, H, W) inputs, a 31 px window at its 352 px input)."""
    weit = 1 + 5 * torch.abs(F.avg_pool2d(mask, kernel_size=31, stride=1, padding=15) - mask)
    wbce = F.binary_cross_entropy_with_logits(pred, mask, reduction="none")
    wbce = (weit * wbce).sum(dim=(2, 3)) / weit.sum(dim=(2, 3))
    pred = torch.sigmoid(pred)
    inter = ((pred * mask) * weit).sum(dim=(2, 3))
    union = ((pred + mask) * weit).sum(dim=(2, 3))
    wiou = 1 - (inter + 1) / (union - inter + 1)
    return (wbce + wiou).mean()


def test_the_structure_loss_is_pranets_at_its_input_size():
    torch.manual_seed(0)
    target = torch.zeros(2, 352, 352)
    target[0, 100:200, 120:260] = 1
    target[1, 40:90, 50:300] = 1
    logits = 3 * torch.randn(2, 352, 352)
    expected = pranet_structure_loss(logits.unsqueeze(1), target.unsqueeze(1))
    assert torch.allclose(structure_loss(logits, target), expected, atol=1e-6)


def test_the_structure_loss_charges_a_wrong_pixel_near_the_outline_more_than_one_far_from_it():
    target = torch.zeros(1, 64, 64)
    target[0, 16:48, 16:48] = 1
    logits = torch.where(target > 0, 6.0, -6.0)  # right everywhere, confidently
    at_outline, far_out = logits.clone(), logits.clone()
    at_outline[0, 15, 30] = 6.0  # one background pixel next to the label's edge called foreground
    far_out[0, 2, 2] = 6.0  # the same mistake in a corner far from any outline
    right = float(structure_loss(logits, target))
    assert float(structure_loss(at_outline, target)) - right > 3 * (float(structure_loss(far_out, target)) - right)


def test_the_structure_term_supervises_every_dice_supervised_pass():
    torch.manual_seed(0)
    target = (torch.rand(2, 32, 32) > 0.5).float()
    y0, y1 = torch.randn(2, 32, 32), torch.randn(2, 32, 32)
    loss, parts = samsp_loss([y0, y1], target, LossConfig(dice_first_pass=True, distill=False, structure=0.5))
    dice = soft_dice_loss(y1, target) + soft_dice_loss(y0, target)
    assert torch.allclose(loss, dice + 0.5 * (structure_loss(y1, target) + structure_loss(y0, target)))
    assert parts["structure"] == pytest.approx(float(structure_loss(y1, target) + structure_loss(y0, target)))
    off, parts = samsp_loss([y0, y1], target, LossConfig(dice_first_pass=True, distill=False))
    assert torch.allclose(off, dice) and "structure" not in parts


def test_the_ground_truth_box_pass_adds_its_weighted_dice_and_is_required_when_weighted():
    torch.manual_seed(0)
    target = (torch.rand(2, 8, 8) > 0.5).float()
    y0, y1, boxed = torch.randn(2, 8, 8), torch.randn(2, 8, 8), torch.randn(2, 8, 8)
    cfg = LossConfig(dice_first_pass=False, distill=False, gt_box=0.5)
    loss, parts = samsp_loss([y0, y1], target, cfg, boxed)
    assert torch.allclose(loss, soft_dice_loss(y1, target) + 0.5 * soft_dice_loss(boxed, target))
    assert parts["dice_gt_box"] == pytest.approx(float(soft_dice_loss(boxed, target)))
    plain, parts = samsp_loss([y0, y1], target, LossConfig(dice_first_pass=False, distill=False), boxed)
    assert torch.allclose(plain, soft_dice_loss(y1, target)) and "dice_gt_box" not in parts  # off by default
    with pytest.raises(ValueError, match="no pass was prompted with the ground-truth box"):
        samsp_loss([y0, y1], target, cfg)


def test_the_focal_term_is_sams_focal_loss_on_every_dice_supervised_pass():
    torch.manual_seed(0)
    target = (torch.rand(2, 16, 16) > 0.5).float()
    y0, y1 = 3 * torch.randn(2, 16, 16), 3 * torch.randn(2, 16, 16)
    loss, parts = samsp_loss([y0, y1], target, LossConfig(dice_first_pass=True, distill=False, focal=20.0))

    def focal(logits: torch.Tensor) -> torch.Tensor:  # Lin et al. 2017, alpha 0.25, gamma 2, written out
        p = torch.sigmoid(logits)
        p_t = p * target + (1 - p) * (1 - target)
        alpha_t = 0.25 * target + 0.75 * (1 - target)
        return (alpha_t * (1 - p_t) ** 2 * F.binary_cross_entropy_with_logits(logits, target, reduction="none")).mean()

    expected = soft_dice_loss(y1, target) + soft_dice_loss(y0, target) + 20.0 * (focal(y1) + focal(y0))
    assert torch.allclose(loss, expected, atol=1e-6)
    assert parts["focal"] == pytest.approx(float(focal(y1) + focal(y0)), abs=1e-6)


def test_the_focal_term_lets_well_classified_pixels_fade_where_bce_does_not():
    target = torch.zeros(1, 8, 8)
    target[0, :4] = 1
    logits = torch.where(target > 0, 3.0, -3.0)  # every pixel right at p = 0.95 ...
    logits[0, 7, 7] = 3.0  # ... but one background pixel called foreground
    logits.requires_grad_(True)

    def term_grad(cfg: LossConfig) -> torch.Tensor:  # the gradient of the term alone, Dice's taken out
        loss = samsp_loss([logits], target, cfg)[0] - soft_dice_loss(logits, target)
        return torch.autograd.grad(loss, logits)[0].abs()

    focal_grad, bce_grad = term_grad(LossConfig(focal=1.0)), term_grad(LossConfig(bce=1.0))
    # relative to the one mistake, a right pixel weighs far less under the focal term than under BCE
    assert focal_grad[0, 0, 0] / focal_grad[0, 7, 7] < 0.1 * bce_grad[0, 0, 0] / bce_grad[0, 7, 7]
