"""The frozen encoder prefix run as a compiled graph: the features of `SamSP.encode_prefix`, faster on a CPU.

Encoding the frozen prefix is a large share of a CPU run: the training cache and the evaluation of every test image.
Eager PyTorch runs TinyViT's element-wise work as separate memory-bound kernels; OpenVINO fuses it and runs the
same arithmetic in less than half the time, in fp32 or bf16 (BENCHMARKS.md, "Encoding the frozen prefix").
`prefix_encoder` exports the prefix to ONNX once per weights, depth and precision in a process and returns a function
from images to features.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import tempfile
import typing
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from ..config import PrefixEngine
from ..errors import SamspError, first_line
from ..modeling.persistence import update_digest
from ..modeling.sam_sp import SamSP
from .onnx_export import trace_to_onnx
from .onnx_runtimes import open_graph, openvino_has_bf16
from .predictor import FLIP_DIMS

log = logging.getLogger("samsp")
PREFIX_ENGINES = typing.get_args(PrefixEngine)
OPENVINO_PRECISIONS = ("fp32", "bf16")
# below this many images the export (about 25 s for LiteMedSAM on 2 cores) costs more than it saves
MIN_IMAGES = 40
PrefixEncoder = Callable[[torch.Tensor], torch.Tensor]
_COMPILED: dict[tuple, PrefixEncoder] = {}  # one compiled prefix per weights and depth, for the process's lifetime


class PrefixGraph(nn.Module):
    """The encoder stages before the first trained one, as one module: images (B, 3, S, S) to features."""

    def __init__(self, model: SamSP):
        super().__init__()
        self.model, self.stop = model, model.prefix_stages

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model.run_encoder(images, 0, self.stop)


def choose_prefix_engine(setting: str, device: torch.device, precision: str, images: int | None) -> tuple[str, str]:
    """The engine that encodes `images` images (None: no bound, a server) for a run in `precision` (fp32, or its
    mixed precision: bf16, fp16; `setting` auto decides) and the sentence that says why."""
    if setting not in PREFIX_ENGINES:
        raise SamspError(f"runtime.prefix_engine must be one of {', '.join(PREFIX_ENGINES)}, got {setting!r}")
    if setting != "auto":
        return setting, f"prefix engine = {setting} (set)"
    if device.type != "cpu":
        return "torch", f"{device.type}: the frozen prefix runs in PyTorch"
    if precision not in OPENVINO_PRECISIONS:
        return "torch", f"CPU, {precision}: the frozen prefix runs in PyTorch under autocast"
    if images is not None and images < MIN_IMAGES:
        return "torch", f"{images} images to encode: too few to pay for compiling the prefix, so PyTorch encodes them"
    missing = [name for name in ("openvino", "onnxscript") if importlib.util.find_spec(name) is None]
    if missing:  # the export goes through ONNX (onnxscript), OpenVINO runs the graph
        return "torch", f"{' and '.join(missing)} not installed (pip install 'samsp[onnx,openvino]'): PyTorch encodes"
    if precision == "bf16" and not openvino_has_bf16():
        return "torch", "CPU, bf16: OpenVINO has no bf16 on this CPU, so the prefix runs in PyTorch under autocast"
    return "openvino", f"CPU, {precision}: the frozen prefix runs in OpenVINO in {precision}, about 2x PyTorch's speed"


def predictor_prefix_engine(model: SamSP, setting: str, precision: str, flips: bool, images: int | None) -> str:
    """What computes the frozen prefix for a `Predictor` of `model` that will segment `images` images (None: no
    bound), logged with the reason: `choose_prefix_engine`'s choice (test-time flips encode three views of each
    image), or torch for a model with no frozen prefix."""
    if model.prefix_stages == 0:
        return "torch"
    views = 1 + len(FLIP_DIMS) if flips else 1
    engine, why = choose_prefix_engine(setting, model.device, precision, None if images is None else images * views)
    log.info(why)
    return engine


def graph_precision(engine: str, precision: str) -> str:
    """The precision `engine` computes the prefix in for a run in `precision`: a bf16 run's OpenVINO graph computes
    in bf16 where this CPU has bf16 units OpenVINO can use, every other graph in fp32 (PyTorch: the run's own)."""
    if engine == "openvino" and precision == "bf16" and openvino_has_bf16():
        return "bf16"
    return "fp32" if engine == "openvino" else precision


def prefix_encoder(model: SamSP, engine: str, precision: str = "fp32") -> PrefixEncoder:
    """A function from preprocessed images to the frozen prefix's features, computed by `engine` (torch or openvino;
    torch computes in the caller's precision, under its autocast if any, openvino in `precision`: fp32 or bf16).

    The OpenVINO graph is exported and compiled on first use and kept for the process, keyed by the frozen weights,
    so a trained model and the pretrained one it started from share one graph.
    """
    if engine == "torch" or model.prefix_stages == 0:
        return model.encode_prefix
    if engine != "openvino":
        raise SamspError(f"unknown prefix engine {engine!r}: choose torch or openvino")
    if precision not in OPENVINO_PRECISIONS:
        raise SamspError(f"OpenVINO runs the prefix in {' or '.join(OPENVINO_PRECISIONS)}, not {precision}")
    key = (prefix_digest(model), engine, precision)
    if key not in _COMPILED:
        _COMPILED[key] = _compile(model, engine, precision)
    return _COMPILED[key]


def prefix_digest(model: SamSP) -> str:
    """A SHA-256 of what the prefix computes with: backbone, depth and the frozen weights of its stages."""
    digest = hashlib.sha256(repr((model.backbone.name, model.prefix_stages)).encode())
    update_digest(digest, model.prefix_weights(model.prefix_stages))
    return digest.hexdigest()


def _compile(model: SamSP, engine: str, precision: str) -> PrefixEncoder:
    size = model.backbone.img_size
    with tempfile.TemporaryDirectory(prefix="samsp-prefix-") as folder:
        path = Path(folder) / "prefix.onnx"
        try:
            trace_to_onnx(PrefixGraph(model).cpu(), (torch.zeros(2, 3, size, size),), ["images"], ["features"], path)
        except Exception as err:  # the exporter raises many types; the message names the model that failed
            raise SamspError(
                f"{model.config.backbone}: its frozen encoder prefix cannot be exported for {engine} "
                f"({first_line(err)}); "
                "use runtime.prefix_engine=torch"
            ) from err
        run = open_graph(path, engine, precision, threads=torch.get_num_threads())

    def encode(images: torch.Tensor) -> torch.Tensor:
        features = run({"images": images.detach().to("cpu", torch.float32).numpy()})["features"]
        return torch.from_numpy(features).to(images.device)

    log.info("compiled the frozen encoder prefix (%d stages) for %s, %s", model.prefix_stages, engine, precision)
    return encode
