"""ONNX export of the whole prompt-free pipeline: one graph from preprocessed images to every pass's logits.

The graph holds the LoRA-merged encoder, pass 0 with no prompt, the box of each pass's mask (inside each image's
unpadded region), the configured self-prompting iterations and the empty-pass fallback, for any batch size. What
stays outside is what depends on each image's size: resize, normalise and pad before, crop and resize back after
(`onnx_engine.OnnxPredictor` does both in numpy, as `Predictor` does in torch).
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator, Sequence
from dataclasses import asdict
from pathlib import Path

import torch
from torch import nn

from .. import __version__
from ..errors import SamspError
from ..files import atomic_path, write_text_atomic
from ..modeling.card import provenance
from ..modeling.persistence import read_model_meta, resolve_model_dir
from ..modeling.sam_sp import SamSP
from .export import prediction_check
from .frame import PIXEL_MEAN, PIXEL_STD
from .onnx_engine import INPUTS, META_NAME, ONNX_NAME, OUTPUTS, OnnxPredictor
from .predictor import Predictor

OPSET = 18
EXPORTER_LOGGERS = ("onnxscript", "onnx_ir")  # the dynamo exporter's optimiser passes


class PromptFreeGraph(nn.Module):
    """What the ONNX graph computes: SamSP's passes for a batch of preprocessed images, as plain tensors.

    In: `images` (B, 3, S, S) float32 and `valid_hw` (B, 2) int64, each image's unpadded size in the input frame.
    Out: `logits` (B, S, S) of the final pass, `pass_logits` (B, P, S, S), `boxes` (B, iterations, 4) each pass's
    prompt in the input frame (NaN where the fallback kept pass 0), `scores` (B,) and `fallback` (B,) bool.
    """

    def __init__(self, model: SamSP):
        super().__init__()
        self.model = model
        self.iterations = model.config.inference_iterations

    def forward(self, images: torch.Tensor, valid_hw: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.model(images=images, valid_hw=valid_hw, iterations=self.iterations)
        boxes = torch.stack(out.boxes, dim=1) if out.boxes else images.new_zeros(images.shape[0], 0, 4)
        return out.logits[-1], torch.stack(out.logits, dim=1), boxes, out.scores, out.fallback


def export_onnx(
    model_dir: str | Path, out_dir: str | Path, opset: int = OPSET, quantize: str | None = None
) -> tuple[Path, float]:
    """Write `samsp.onnx` and `samsp_onnx.json` to `out_dir`; return the folder and ORT's largest probability
    difference from the PyTorch `Predictor` of the trained model on a seeded random image (also in the JSON).
    `quantize="int8"`: int8 weights, activations quantised per batch at run time (ONNX Runtime dynamic quantisation).
    """
    if quantize not in (None, "int8"):
        raise SamspError(f"unknown quantisation {quantize!r}: choose int8")
    try:
        import onnx
    except ImportError as err:
        raise SamspError("ONNX export needs the onnx extra: pip install 'samsp[onnx]'") from err
    source = resolve_model_dir(Path(model_dir))
    model = SamSP.from_pretrained(source)
    graph = PromptFreeGraph(model.merged().eval()).eval()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / META_NAME).unlink(missing_ok=True)  # written last: a folder without it holds no finished export

    write_graph(graph, model.backbone.img_size, out_dir / ONNX_NAME, opset)
    if quantize:
        quantize_int8(out_dir / ONNX_NAME)
    onnx.checker.check_model(str(out_dir / ONNX_NAME))
    meta = describe(model, graph.iterations, source, opset, quantize, onnx.__version__)
    write_text_atomic(out_dir / META_NAME, json.dumps(meta, indent=2))
    meta["ort_max_abs_prob_diff"] = prediction_check(Predictor(model), OnnxPredictor(out_dir), meta["input_size"])
    write_text_atomic(out_dir / META_NAME, json.dumps(meta, indent=2))
    return out_dir, meta["ort_max_abs_prob_diff"]


def write_graph(graph: PromptFreeGraph, size: int, path: Path, opset: int) -> None:
    """Trace the prompt-free graph with a free batch size and save it as ONNX."""
    example = (torch.zeros(2, 3, size, size), torch.full((2, 2), size, dtype=torch.int64))
    trace_to_onnx(graph, example, INPUTS, OUTPUTS, path, opset)


def trace_to_onnx(
    module: nn.Module,
    example: tuple[torch.Tensor, ...],
    input_names: Sequence[str],
    output_names: Sequence[str],
    path: Path,
    opset: int = OPSET,
) -> None:
    """Export `module` to ONNX at `path` with the first dimension of every input free (the batch size).

    The graph is fp32 whatever autocast the caller runs under (a bf16 training run compiles its frozen prefix here):
    autocast would trace mixed-dtype ops that the ONNX decomposition rejects."""
    batch = torch.export.Dim("batch")
    dynamic = tuple({0: batch} for _ in example)  # one entry per positional input
    # strict (dynamo) tracing: TinyViT's `len(x)` would fix the batch size under non-strict tracing
    with torch.no_grad(), torch.autocast("cpu", enabled=False):
        program = torch.export.export(module, example, dynamic_shapes=dynamic, strict=True)
    with quiet_loggers(EXPORTER_LOGGERS), torch.autocast("cpu", enabled=False):
        onnx_program = torch.onnx.export(
            program,
            example,
            input_names=list(input_names),
            output_names=list(output_names),
            opset_version=opset,
            verbose=False,
        )
    onnx_program.save(str(path))


@contextlib.contextmanager
def quiet_loggers(names: Sequence[str], level: int = logging.WARNING) -> Iterator[None]:
    """Raise these loggers to `level` for a while: the ONNX optimiser logs hundreds of INFO lines per export, which
    the CLI's INFO log (and a training run's train.log) would otherwise carry."""
    loggers = [logging.getLogger(name) for name in names]
    before = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(max(level, logger.getEffectiveLevel()))
    try:
        yield
    finally:
        for logger, old in zip(loggers, before, strict=True):
            logger.setLevel(old)


def describe(model: SamSP, iterations: int, source: Path, opset: int, quantize: str | None, onnx_version: str) -> dict:
    """What samsp_onnx.json says: how to prepare the input and read the output, and where the graph came from."""
    config = model.config
    normalization = {"kind": model.backbone.normalization}
    if model.backbone.normalization == "imagenet":
        normalization.update(mean=list(PIXEL_MEAN), std=list(PIXEL_STD))
    return {
        "format": "onnx",
        "samsp_version": __version__,
        "onnx_file": ONNX_NAME,
        "backbone": config.backbone,
        "input_size": model.backbone.img_size,
        "normalization": normalization,
        "threshold": config.threshold,
        "iterations": iterations,
        "empty_fallback": config.empty_fallback,
        "inputs": list(INPUTS),
        "outputs": list(OUTPUTS),
        "opset": opset,
        "quantization": "int8 dynamic (weights int8; activations uint8, scaled per batch)" if quantize else None,
        "exported_from": str(source.resolve()),
        "trained_as": asdict(config),
        "torch": torch.__version__,
        "onnx": onnx_version,
        **provenance(source, read_model_meta(source)),  # the data, epoch and validation Dice, for the model card
    }


def quantize_int8(path: Path) -> None:
    """Replace the float graph at `path` by ONNX Runtime's dynamic int8 quantisation of it (MatMul, Gemm and
    attention weights in int8; activations quantised per batch when it runs)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    logging.disable(logging.INFO)  # the quantiser logs a line per tensor it leaves in float
    try:
        with atomic_path(path) as tmp:
            quantize_dynamic(str(path), str(tmp), weight_type=QuantType.QInt8)
    finally:
        logging.disable(logging.NOTSET)
