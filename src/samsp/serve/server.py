"""Load a model once and serve it with uvicorn: one process, one model, requests queued for it."""

from __future__ import annotations

import logging
from pathlib import Path

import uvicorn

from ..errors import SamspError
from ..modeling.card import ModelCard, card_from_meta, model_name, read_card
from .app import create_app
from .worker import Limits, Segmenter

log = logging.getLogger("samsp")
LOOPBACK_NAMES = ["127.0.0.1", "localhost"]


def load_model(
    model: str,
    precision: str = "fp32",
    iterations: int | None = None,
    flips: bool = False,
    checkpoint: str | None = None,
    engine: str = "torch",
    prefix_engine: str = "auto",
) -> tuple[Segmenter, ModelCard]:
    """The predictor and card of a run folder, export or Hub repository id (`engine` torch), or of a
    `samsp export --format onnx` folder run by ONNX Runtime (`onnx`) or OpenVINO (`openvino`).

    `prefix_engine` (torch engine): what computes the frozen encoder prefix of each upload; auto compiles it with
    OpenVINO on a CPU here, once, since a server is sent images for as long as it runs (`predictor_prefix_engine`).
    """
    if engine != "torch":
        if prefix_engine != "auto":
            raise SamspError(f"--prefix-engine applies to the PyTorch engine; --engine {engine} runs the whole graph")
        from ..inference.onnx_engine import open_engine

        predictor = open_engine(model, engine, 1, precision, iterations, flips, checkpoint)
        return predictor, card_from_meta(predictor.meta, model_name(Path(model)))
    from ..inference.predictor import Predictor
    from ..inference.prefix_graph import predictor_prefix_engine
    from ..modeling.persistence import read_model_meta, resolve_model_dir
    from ..modeling.sam_sp import SamSP

    directory = resolve_model_dir(Path(model))
    card = read_card(directory, read_model_meta(directory), name=None if Path(model).exists() else model)
    network = SamSP.from_pretrained(directory, checkpoint=checkpoint)
    chosen = predictor_prefix_engine(network, prefix_engine, precision, flips, images=None)
    return Predictor(network, precision, batch_size=1, iterations=iterations, flips=flips, prefix_engine=chosen), card


def serve(
    model: str,
    host: str = "127.0.0.1",
    port: int = 8000,
    precision: str = "fp32",
    iterations: int | None = None,
    flips: bool = False,
    checkpoint: str | None = None,
    limits: Limits | None = None,
    engine: str = "torch",
    prefix_engine: str = "auto",
) -> None:
    """Serve `model` on http://host:port until interrupted: the page at /, the API under /api/."""
    predictor, card = load_model(model, precision, iterations, flips, checkpoint, engine, prefix_engine)
    loopback = host in LOOPBACK_NAMES
    passes = card.iterations if iterations is None else iterations
    described = {"engine": engine, "precision": precision, "flips": flips, "iterations": passes}
    if engine == "torch":
        described["prefix_engine"] = predictor.prefix_engine
    app = create_app(predictor, card, limits, described, allowed_hosts=LOOPBACK_NAMES if loopback else None)
    if not loopback:
        log.warning("serving on %s: anyone who can reach this machine can send images to the model", host)
    log.info("serving %s (%s) on http://%s:%d", card.name, card.backbone, host, port)
    uvicorn.run(app, host=host, port=port, log_level="info")
