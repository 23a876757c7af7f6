"""Prompt-free prediction with an exported ONNX model: ONNX Runtime (or OpenVINO), numpy and Pillow, no torch.

`samsp export --format onnx` writes `samsp.onnx` (encoder, pass 0, the self-prompt boxes and every later pass in
one graph) and `samsp_onnx.json` (how to prepare its input and read its output). `OnnxPredictor` prepares images
exactly as the PyTorch `Predictor` does (preprocess_numpy.py) and returns the same `Prediction`s.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..errors import SamspError
from .onnx_runtimes import open_graph
from .prediction import Prediction, as_rgb, make_prediction
from .preprocess_numpy import postprocess, preprocess

ONNX_NAME = "samsp.onnx"
META_NAME = "samsp_onnx.json"
INPUTS = ("images", "valid_hw")
OUTPUTS = ("logits", "pass_logits", "boxes", "scores", "fallback")
_REQUIRED = {"input_size", "normalization", "threshold", "outputs"}


def read_onnx_meta(model_dir: str | Path) -> dict:
    """The parsed samsp_onnx.json of an ONNX export; SamspError naming the file when it is missing or unusable."""
    path = Path(model_dir) / META_NAME
    if not path.is_file():
        raise SamspError(f"{path}: not found (export the model with `samsp export --format onnx` first)")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
        usable = isinstance(meta, dict) and set(meta) >= _REQUIRED and tuple(meta["outputs"]) == OUTPUTS
    except (OSError, UnicodeDecodeError, ValueError, TypeError) as err:
        raise SamspError(f"{path}: not a samsp ONNX export description ({type(err).__name__}: {err})") from err
    if not usable:
        raise SamspError(f"{path}: not a samsp ONNX export description (needs {', '.join(sorted(_REQUIRED))})")
    return meta


def sigmoid(x: np.ndarray) -> np.ndarray:
    """1 / (1 + exp(-x)) in float32; very negative logits give 0 without an overflow warning."""
    with np.errstate(over="ignore"):
        return (1 / (1 + np.exp(-x.astype(np.float32)))).astype(np.float32)


class OnnxPredictor:
    """Batched prompt-free prediction with an ONNX export (same `Prediction`s as `Predictor`), run by ONNX Runtime
    or OpenVINO.

    The number of self-prompting iterations and the empty-pass fallback are those fixed in the graph at export.
    `runtime`: "onnxruntime" (default) or "openvino"; `precision`: "fp32", or "bf16" with OpenVINO on a CPU with
    bf16 units; `threads`: the runtime's threads (default: its own choice); `providers`: ONNX Runtime execution
    providers (default: the CPU).
    """

    def __init__(
        self,
        model_dir: str | Path,
        batch_size: int = 4,
        providers: Sequence[str] | None = None,
        threads: int | None = None,
        runtime: str = "onnxruntime",
        precision: str = "fp32",
    ):
        if batch_size < 1:
            raise SamspError(f"batch size must be >= 1, got {batch_size}")
        self.meta = read_onnx_meta(model_dir)
        path = Path(model_dir) / self.meta.get("onnx_file", ONNX_NAME)
        if not path.is_file():
            raise SamspError(f"{path}: not found (the ONNX graph that {Path(model_dir) / META_NAME} describes)")
        self.run_graph = open_graph(path, runtime, precision, threads, providers)
        self.batch_size = batch_size
        self.size = int(self.meta["input_size"])
        self.threshold = float(self.meta["threshold"])
        norm = self.meta["normalization"]
        self.normalization = {
            "normalization": norm["kind"],
            **{k: tuple(norm[k]) for k in ("mean", "std") if k in norm},
        }

    def predict(self, image: np.ndarray) -> Prediction:
        """Segment one HxWx3 uint8 RGB image (grayscale and RGBA are accepted)."""
        return self.predict_batch([image])[0]

    def predict_batch(self, images: Sequence[np.ndarray]) -> list[Prediction]:
        """Segment many images, `batch_size` at a time through the graph."""
        results: list[Prediction] = []
        for start in range(0, len(images), self.batch_size):
            chunk = images[start : start + self.batch_size]
            prepared = [preprocess(as_rgb(im), self.size, **self.normalization) for im in chunk]
            frames = [frame for _, frame in prepared]
            feed = {
                "images": np.stack([x for x, _ in prepared]),
                "valid_hw": np.array([f.resized_hw for f in frames], dtype=np.int64),
            }
            out = self.run_graph(feed)
            pass_logits, boxes, scores, fallback = (out[k] for k in OUTPUTS[1:])
            for i, frame in enumerate(frames):
                probs = sigmoid(postprocess(pass_logits[i], frame))
                box = boxes[i, -1] if boxes.shape[1] and not fallback[i] else None
                results.append(make_prediction(list(probs), box, frame, scores[i], fallback[i], self.threshold))
        return results


ENGINE_RUNTIMES = {"onnx": "onnxruntime", "openvino": "openvino"}  # --engine name -> runtime of the graph


def open_engine(
    model_dir: str | Path,
    engine: str,
    batch_size: int = 4,
    precision: str = "fp32",
    iterations: int | None = None,
    flips: bool = False,
    checkpoint: str | None = None,
) -> OnnxPredictor:
    """The `OnnxPredictor` of `--engine onnx|openvino`. The prediction options an exported graph fixes
    (iterations, flips, base checkpoint) are refused in one line rather than ignored."""
    given = {"--iterations": iterations is not None, "--flips": flips, "--checkpoint": checkpoint is not None}
    refused = [flag for flag, used in given.items() if used]
    if refused:
        raise SamspError(f"{', '.join(refused)}: not available with --engine {engine} (the exported graph fixes them)")
    return OnnxPredictor(model_dir, batch_size=batch_size, runtime=ENGINE_RUNTIMES[engine], precision=precision)
