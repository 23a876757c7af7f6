"""The runtimes that run an exported `samsp.onnx`: ONNX Runtime, or OpenVINO (which reads the same file).

`open_graph` returns a function from the input arrays to the named output arrays, so `OnnxPredictor` does not care
which runtime computes them. Neither needs torch.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import SamspError, first_line

RUNTIMES = ("onnxruntime", "openvino")
GraphRunner = Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]
_OPENVINO_PRECISION = {"fp32": "f32", "bf16": "bf16"}


def open_graph(
    path: Path,
    runtime: str = "onnxruntime",
    precision: str = "fp32",
    threads: int | None = None,
    providers: Sequence[str] | None = None,
) -> GraphRunner:
    """Load the ONNX graph at `path` with `runtime`; `precision` bf16 needs OpenVINO on a CPU with bf16 units."""
    if runtime == "onnxruntime":
        if precision != "fp32":
            raise SamspError(f"precision {precision} needs the openvino runtime; ONNX Runtime runs the graph in fp32")
        return _onnxruntime(path, threads, providers)
    if runtime == "openvino":
        if precision not in _OPENVINO_PRECISION:
            raise SamspError(f"unknown precision {precision!r}: choose fp32 or bf16")
        if providers:
            raise SamspError("execution providers are an ONNX Runtime option; OpenVINO runs on its CPU device")
        return _openvino(path, precision, threads)
    raise SamspError(f"unknown runtime {runtime!r}: choose {' or '.join(RUNTIMES)}")


def _onnxruntime(path: Path, threads: int | None, providers: Sequence[str] | None) -> GraphRunner:
    try:
        import onnxruntime as ort
    except ImportError as err:
        raise SamspError("the ONNX engine needs onnxruntime: pip install 'samsp[onnx]'") from err
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    try:
        session = ort.InferenceSession(str(path), options, providers=list(providers or ["CPUExecutionProvider"]))
    except Exception as err:  # onnxruntime raises its own error types for a corrupt or foreign graph
        raise SamspError(f"{path}: ONNX Runtime cannot load it ({err})") from err
    names = [o.name for o in session.get_outputs()]

    def run(feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return dict(zip(names, session.run(names, feed), strict=True))

    return run


def openvino_has_bf16() -> bool:
    """Whether OpenVINO can run bf16 on this machine's CPU (False when OpenVINO is not installed)."""
    try:
        core = openvino_core()
    except SamspError:
        return False
    return "BF16" in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")


@functools.cache
def openvino_core() -> Any:
    """The process's one OpenVINO Core, kept for its lifetime; every graph compiles on it.

    A Core's CPU plugin points the compiling thread's signal stack (sigaltstack) at memory of its own on the first
    compile and puts the previous one back when the Core is freed. Cores freed in another order than they were made
    leave that stack pointing at freed memory, and the next Python signal handler (SIGCHLD after DataLoader workers,
    SIGINT) kills the process with SIGSEGV; one Core that never dies cannot (BENCHMARKS.md, prefix engine).
    """
    try:
        import openvino as ov
    except ImportError as err:
        raise SamspError("the OpenVINO engine needs openvino: pip install 'samsp[openvino]'") from err
    return ov.Core()


def _openvino(path: Path, precision: str, threads: int | None) -> GraphRunner:
    core = openvino_core()
    if precision == "bf16" and not openvino_has_bf16():
        raise SamspError("precision bf16: this CPU has no bf16 units OpenVINO can use; use fp32")
    # the precision is always set: OpenVINO would otherwise pick bf16 by itself on CPUs that have it
    config: dict[str, object] = {"INFERENCE_PRECISION_HINT": _OPENVINO_PRECISION[precision]}
    if threads:
        config["INFERENCE_NUM_THREADS"] = threads
    try:
        compiled = core.compile_model(str(path), "CPU", config)
    except Exception as err:  # OpenVINO raises RuntimeError subclasses of its own for a graph it cannot read
        raise SamspError(f"{path}: OpenVINO cannot load it ({first_line(err)})") from err
    request = compiled.create_infer_request()
    outputs = [(o.get_any_name(), o) for o in compiled.outputs]

    def run(feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        result = request.infer(feed)
        return {name: np.array(result[port]) for name, port in outputs}

    return run
