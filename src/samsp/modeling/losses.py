"""The SAM-SP loss: soft Dice on the final pass (and, by default, on pass 0) plus alpha times self-distillation from
the final pass to earlier passes. Dice on pass 0 is not in the paper's loss (`dice_first_pass=False` restores it).

An optional Dice term on a pass prompted by the ground-truth box (`gt_box`, off by default) keeps the decoder
following boxes while it learns to segment without one; the self-prompted pass depends on that skill.

An optional binary cross-entropy term (`bce`, off by default as in the paper) keeps a gradient on confident
mistakes: soft Dice's gradient with respect to a logit carries the factor p(1 - p), which vanishes where the
sigmoid saturates, so a pixel wrongly predicted at p = 0.999 is almost never corrected by Dice alone.

An optional structure term (`structure`, off by default) is the loss of the task-specific polyp models (PraNet,
Polyp-PVT): binary cross-entropy and IoU, both weighted up to 6x on pixels near the label's outline, where the
prompt-free error of a found structure lies.

An optional focal term (`focal`, off by default) is the per-pixel loss SAM itself was trained with (Kirillov et al.
2023: focal and Dice in a 20:1 ratio, so `focal=20` is SAM's own mix): BCE scaled by (1 - p_t)^2 so well-classified
pixels fade and the hard ones (a flat polyp's faint rim, a glare spot) carry the gradient; alpha 0.25 as in
RetinaNet. torchvision's `sigmoid_focal_loss` computes it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torchvision.ops import sigmoid_focal_loss

from ..config import LossConfig


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """1 - soft Dice per image on sigmoid probabilities, averaged over the batch. (B, H, W) inputs."""
    prob = torch.sigmoid(logits.float()).flatten(1)
    target = target.float().flatten(1)
    inter = (prob * target).sum(1)
    dice = (2 * inter + smooth) / (prob.sum(1) + target.sum(1) + smooth)
    return (1 - dice).mean()


def structure_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """PraNet's structure loss, averaged over the batch: weighted BCE + weighted IoU, each pixel weighted by
    1 + 5 |local mean of the label - label|, so pixels near an outline count up to 6 times. PraNet's local window is
    31 px at its 352 px input; it is scaled to the frame here (23 px at 256). (B, H, W) inputs."""
    logits, target = logits.float().unsqueeze(1), target.float().unsqueeze(1)
    radius = max(1, round(15 * target.shape[-1] / 352))
    local = F.avg_pool2d(target, kernel_size=2 * radius + 1, stride=1, padding=radius)
    weight = 1 + 5 * (local - target).abs()
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    wbce = (weight * bce).sum((2, 3)) / weight.sum((2, 3))
    prob = torch.sigmoid(logits)
    inter = (prob * target * weight).sum((2, 3))
    union = ((prob + target) * weight).sum((2, 3))
    wiou = 1 - (inter + 1) / (union - inter + 1)
    return (wbce + wiou).mean()


def bernoulli_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Per-pixel KL(teacher || student) between foreground/background Bernoullis, averaged over pixels.

    The teacher is detached here, so this term moves only the student pass. Scaled by T^2 (Hinton et al.) so
    its gradient size does not shrink as the temperature grows.
    """
    t = teacher_logits.detach().float() / temperature
    s = student_logits.float() / temperature
    p_t = torch.sigmoid(t)
    kl = p_t * (F.logsigmoid(t) - F.logsigmoid(s)) + (1 - p_t) * (F.logsigmoid(-t) - F.logsigmoid(-s))
    return kl.mean() * temperature**2


def samsp_loss(
    passes: list[torch.Tensor], target: torch.Tensor, cfg: LossConfig, prompted: torch.Tensor | None = None
) -> tuple[torch.Tensor, dict]:
    """Loss over the decoder passes (logits in the input frame, first to last) against the target mask.

    With one pass (no self-prompting) it is the Dice of that pass alone. With more, the last pass is the
    teacher for every earlier one (for two passes: KL(y1 || y0), the paper's L_SD). `prompted` is the pass
    given the ground-truth box, weighted by `cfg.gt_box`.
    """
    dice = soft_dice_loss(passes[-1], target)
    total = dice
    parts = {"dice": float(dice.detach())}
    supervised = [passes[-1]]
    if len(passes) > 1:
        if cfg.dice_first_pass:
            dice0 = soft_dice_loss(passes[0], target)
            total = total + dice0
            parts["dice_pass0"] = float(dice0.detach())
            supervised.append(passes[0])
        if cfg.distill and cfg.alpha > 0:
            sd = torch.stack([bernoulli_kl(p, passes[-1], cfg.temperature) for p in passes[:-1]]).mean()
            total = total + cfg.alpha * sd
            parts["distill"] = float(sd.detach())
    if cfg.gt_box > 0:
        if prompted is None:
            raise ValueError("loss.gt_box is set but no pass was prompted with the ground-truth box")
        dice_box = soft_dice_loss(prompted, target)
        total = total + cfg.gt_box * dice_box
        parts["dice_gt_box"] = float(dice_box.detach())
        supervised.append(prompted)
    optional = {  # terms on every Dice-supervised pass: name -> (weight, the term of one pass)
        "bce": (cfg.bce, lambda p: F.binary_cross_entropy_with_logits(p.float(), target.float())),
        "focal": (cfg.focal, lambda p: sigmoid_focal_loss(p.float(), target.float(), reduction="mean")),
        "structure": (cfg.structure, lambda p: structure_loss(p, target)),
    }
    for name, (weight, term) in optional.items():
        if weight > 0:
            value = torch.stack([term(p) for p in supervised]).sum()
            total = total + weight * value
            parts[name] = float(value.detach())
    parts["loss"] = float(total.detach())
    return total, parts
