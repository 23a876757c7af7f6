"""samsp: SAM that segments domain images with no prompt (SAM-SP: LoRA, self-prompting, self-distillation).

The public surface: build or load a model (`SamSP`), predict with it (`Predictor`, `Prediction`), train one
(`train`, `Trainer`, the config classes), and score one (`evaluate`). Each name is imported on first use, so
`import samsp` does not import torch: the ONNX Runtime engine (`samsp.inference.onnx_engine`) runs without it.
"""

from .lazy import lazy_exports

__version__ = "0.1.0"

_PUBLIC = {
    "DataConfig": "config",
    "LossConfig": "config",
    "ModelConfig": "config",
    "OptimConfig": "config",
    "RuntimeConfig": "config",
    "TrainConfig": "config",
    "load_config": "config",
    "evaluate": "evaluation.evaluate",
    "Prediction": "inference.prediction",
    "Predictor": "inference.predictor",
    "SamSP": "modeling.sam_sp",
    "Trainer": "training.trainer",
    "train": "training.trainer",
}
__all__ = sorted([*_PUBLIC, "__version__"])
__getattr__, __dir__ = lazy_exports(__name__, _PUBLIC)
