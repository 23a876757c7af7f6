"""An exponential moving average of the trained weights (`optim.ema`): what validation and the saved models use."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch


class WeightAverage:
    """After every optimiser step, `average <- decay * average + (1 - decay) * weight` for each trainable weight of
    `model` (the frozen ones never change, so they are not copied). `swapped_in()` lends the averages to the model
    and puts the trained weights back afterwards; the optimiser keeps working on the trained weights."""

    def __init__(self, model: torch.nn.Module, decay: float):
        named = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
        self.decay = decay
        self.names = [name for name, _ in named]
        self.params = [p for _, p in named]
        self.averages = [p.detach().clone() for p in self.params]

    @torch.no_grad()
    def update(self) -> None:
        """Move every average towards its weight after an optimiser step."""
        for average, param in zip(self.averages, self.params, strict=True):
            average.lerp_(param, 1 - self.decay)

    @contextlib.contextmanager
    def swapped_in(self) -> Iterator[None]:
        """Inside the block the model holds the averaged weights; its trained weights come back on leaving."""
        with torch.no_grad():
            trained = [p.detach().clone() for p in self.params]
            for param, average in zip(self.params, self.averages, strict=True):
                param.copy_(average)
        try:
            yield
        finally:
            with torch.no_grad():
                for param, weight in zip(self.params, trained, strict=True):
                    param.copy_(weight)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The averages by parameter name (on the CPU), for the resumable training state."""
        return {name: average.cpu() for name, average in zip(self.names, self.averages, strict=True)}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restore the averages saved by `state_dict`."""
        with torch.no_grad():
            for name, average in zip(self.names, self.averages, strict=True):
                average.copy_(state[name])
