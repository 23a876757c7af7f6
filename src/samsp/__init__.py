"""samsp: SAM that segments domain images with no prompt (SAM-SP: LoRA, self-prompting, self-distillation).

The public surface: build or load a model (`SamSP`), predict with it (`Predictor`, `Prediction`), train one
(`train`, `Trainer`, the config classes), and score one (`evaluate`).
"""

__version__ = "0.1.0"

from .config import (  # noqa: E402
    DataConfig,
    LossConfig,
    ModelConfig,
    OptimConfig,
    RuntimeConfig,
    TrainConfig,
    load_config,
)
from .evaluation.evaluate import evaluate  # noqa: E402
from .inference.predictor import Prediction, Predictor  # noqa: E402
from .modeling.sam_sp import SamSP  # noqa: E402
from .training.trainer import Trainer, train  # noqa: E402

__all__ = [
    "DataConfig",
    "LossConfig",
    "ModelConfig",
    "OptimConfig",
    "Prediction",
    "Predictor",
    "RuntimeConfig",
    "SamSP",
    "TrainConfig",
    "Trainer",
    "__version__",
    "evaluate",
    "load_config",
    "train",
]
