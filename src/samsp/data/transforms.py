"""Joint image/mask augmentation for training, configured by a plain dict so it can live in a YAML config."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import albumentations as A
import numpy as np

from samsp.errors import SamspError

DEFAULT_AUGMENT: dict[str, float] = {"hflip": 0.5, "vflip": 0.5, "rotate90": 0.5, "affine": 0.5, "color": 0.5}


class Augment:
    """Callable ``(image, mask) -> (image, mask)``; a class so DataLoader workers can pickle it."""

    def __init__(self, probs: Mapping[str, float], seed: int | None = None):
        self.probs = dict(probs)
        transforms = [
            A.HorizontalFlip(p=self.probs["hflip"]),
            A.VerticalFlip(p=self.probs["vflip"]),
            A.RandomRotate90(p=self.probs["rotate90"]),
            A.Affine(  # defaults: constant 0 border for image and mask, nearest for the mask
                scale=(0.9, 1.1),
                translate_percent=(-0.0625, 0.0625),
                rotate=(-15, 15),
                p=self.probs["affine"],
            ),
            A.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2, hue=0.02, p=self.probs["color"]),
        ]
        self.pipeline = A.Compose([t for t in transforms if t.p > 0], seed=seed)

    def set_seed(self, seed: int | None) -> None:
        """Re-seed, e.g. per DataLoader worker: albumentations 2.0 gives all workers one stream."""
        self.pipeline.set_random_seed(seed)

    def __call__(self, image: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Apply the same geometric transform to both; colour changes touch the image only."""
        out = self.pipeline(image=image, mask=mask)
        return out["image"], out["mask"]


def build_augment(
    cfg: Mapping[str, float] | bool | None, seed: int | None = None
) -> Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]] | None:
    """Build the training augmentation, or None (evaluation) for None/False/empty config.

    ``True`` uses DEFAULT_AUGMENT; a dict overrides its probabilities (0 disables a transform). The image is
    HxWx3 uint8 and the mask HxW uint8; with a ``seed`` the sequence of random transforms is reproducible.
    """
    if not cfg:
        return None
    probs = dict(DEFAULT_AUGMENT)
    if cfg is not True:
        if not isinstance(cfg, Mapping):
            raise SamspError(f"augment config must be a mapping of probabilities or true/false, not {cfg!r}")
        unknown = sorted(set(cfg) - set(DEFAULT_AUGMENT))
        if unknown:
            raise SamspError(f"unknown augment option(s) {unknown}; known: {', '.join(DEFAULT_AUGMENT)}")
        probs.update(cfg)
    bad = {k: v for k, v in probs.items() if isinstance(v, bool) or not isinstance(v, int | float) or not 0 <= v <= 1}
    if bad:
        raise SamspError(f"augment probabilities must be numbers in [0, 1], got {bad}")
    return Augment({k: float(v) for k, v in probs.items()}, seed=seed)
