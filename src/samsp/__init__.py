"""samsp: SAM that segments domain images with no prompt (SAM-SP: LoRA, self-prompting, self-distillation)."""

__version__ = "0.1.0"

from .model import ModelConfig, Prediction, SamSP  # noqa: E402

__all__ = ["ModelConfig", "Prediction", "SamSP", "__version__"]
