"""The `samsp` command: thin wrappers that parse options, call the package's functions, and print."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import warnings
from pathlib import Path

from .config import Precision, PrefixEngine
from .errors import Preempted, SamspError

PRECISIONS = Precision.__args__
PREFIX_ENGINES = PrefixEngine.__args__
log = logging.getLogger("samsp")


def _data_options(parser: argparse.ArgumentParser) -> None:
    """The data options train, evaluate and check-data share."""
    g = parser.add_argument_group("data")
    g.add_argument("--data", help="folder with images/ and masks/, or a dataset name (kvasir-seg, isic2018)")
    g.add_argument("--csv", help="CSV of image,mask paths (relative to --data, else to the CSV's folder)")
    g.add_argument("--images-dir", help="image subfolder (default: images)")
    g.add_argument("--masks-dir", help="mask subfolder (default: masks)")
    g.add_argument("--mask-suffix", default="", help="mask name = image stem + suffix, e.g. _segmentation")
    g.add_argument("--mask-ext", default=None, help="mask extension when it differs from the image's, e.g. .png")
    g.add_argument("--skip-unpaired", action="store_true", help="leave unpaired images out with a warning")


def _engine_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--engine",
        default="torch",
        choices=("torch", "onnx", "openvino"),
        help="torch (default): a run or export folder; onnx: ONNX Runtime, openvino: OpenVINO (the fastest on a "
        "CPU), both on a `samsp export --format onnx` folder and without torch",
    )


def _inference_options(parser: argparse.ArgumentParser, batches: bool = True) -> None:
    """The prediction options evaluate, predict and serve share (they mean what samsp.Predictor's arguments mean)."""
    if batches:
        parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--iterations", type=int, help="self-prompting iterations (default: as trained)")
    parser.add_argument(
        "--precision",
        default="fp32",
        choices=PRECISIONS,
        help="bf16: bfloat16 (torch autocast, or OpenVINO's bf16 inference), faster on a CPU with bf16 units; "
        "masks differ at a few boundary pixels",
    )
    parser.add_argument("--flips", action="store_true", help="average with the flipped images (test-time flips)")
    parser.add_argument("--checkpoint", help="base SAM weights, when not at the path recorded in the model")


def _data_settings(args: argparse.Namespace) -> dict[str, str]:
    """The data settings the user gave, as `data.` keys (defaults apply to the rest)."""
    given = {
        "path": args.data,
        "csv": args.csv,
        "images_dir": args.images_dir,
        "masks_dir": args.masks_dir,
        "mask_suffix": args.mask_suffix or None,
        "mask_ext": args.mask_ext,
        "on_unpaired": "skip" if args.skip_unpaired else None,
    }
    return {k: v for k, v in given.items() if v is not None}


def _data_config(args: argparse.Namespace):
    from .config import DataConfig

    return DataConfig(**_data_settings(args))


def _predictor(args: argparse.Namespace, inputs: list[str] | None = None):
    """The PyTorch engine's predictor; given the `inputs` it will segment, `predictor_prefix_engine` decides for
    their number what computes the frozen prefix (OpenVINO on a CPU, as evaluation and training do)."""
    from .inference.bulk import input_images
    from .inference.predictor import Predictor
    from .inference.prefix_graph import predictor_prefix_engine
    from .modeling.sam_sp import SamSP
    from .training.hardware import forced_bf16_warning

    model = SamSP.from_pretrained(args.model, checkpoint=args.checkpoint)
    if args.precision == "bf16" and (slow := forced_bf16_warning(model.device)):
        print(f"samsp: warning: {slow}", file=sys.stderr)
    engine = "torch"
    if inputs:
        engine = predictor_prefix_engine(model, "auto", args.precision, args.flips, len(input_images(inputs)))
    return Predictor(model, args.precision, args.batch_size, args.iterations, args.flips, engine)


def _onnx_predictor(args: argparse.Namespace):
    """An exported ONNX graph run by ONNX Runtime or OpenVINO; options the graph fixes are refused, not ignored."""
    from .inference.onnx_engine import open_engine

    options = (args.batch_size, args.precision, args.iterations, args.flips, args.checkpoint)
    return open_engine(args.model, args.engine, *options)


def _train_parser(sub) -> None:
    t = sub.add_parser("train", help="fine-tune with SAM-SP on an image/mask folder")
    t.add_argument("--out", default="runs/samsp", help="run folder (default: runs/samsp)")
    t.add_argument("--config", help="YAML config (see configs/)")
    t.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a setting, e.g. --set optim.lr=1e-4 (repeatable)",
    )
    t.add_argument("--resume", metavar="RUN_DIR", help="continue this run from its last epoch")
    for flag, key, kind in (
        ("--backbone", "model.backbone", str),
        ("--checkpoint", "model.checkpoint", str),
        ("--input-size", "model.input_size", int),
        ("--strategy", "model.strategy", str),
        ("--iterations", "model.iterations", int),
        ("--epochs", "optim.epochs", int),
        ("--batch-size", "optim.batch_size", int),
        ("--lr", "optim.lr", float),
        ("--minutes", "optim.time_budget_min", float),
        ("--limit", "data.limit", int),
        ("--train-ids", "data.train_ids", str),
        ("--val-ids", "data.val_ids", str),
        ("--device", "runtime.device", str),
        ("--seed", "runtime.seed", int),
    ):
        t.add_argument(flag, dest=key, type=kind, default=None, help=f"sets {key}")
    t.add_argument("--no-self-prompt", action="store_true", help="baseline: one no-prompt pass (SAMed-style)")
    t.add_argument("--no-distill", action="store_true", help="ablation: SAM-SP without self-distillation")
    _data_options(t)


def _evaluate_parser(sub) -> None:
    e = sub.add_parser("evaluate", help="prompt-free metrics of a model, or of any folder of predicted masks")
    e.add_argument("--model", help="run or export folder, or a Hugging Face Hub repo id (user/name)")
    e.add_argument("--ids", help="evaluate only the ids listed in this file (one per line)")
    e.add_argument("--pred", help="folder of predicted masks (instead of --model)")
    e.add_argument("--gt", help="folder of ground-truth masks (with --pred)")
    e.add_argument("--out", required=True, help="folder for per_image.csv and summary.json")
    e.add_argument(
        "--prompt",
        default="none",
        choices=("none", "full_box", "gt_box"),
        help="none (default): SAM-SP; full_box / gt_box: one boxed pass, for reference rows only",
    )
    e.add_argument(
        "--part-size",
        type=int,
        help="images decoded, predicted and scored at a time (default: 256); memory grows with it, not with the "
        "number of images",
    )
    _engine_option(e)
    _inference_options(e)
    _data_options(e)


def _predict_parser(sub) -> None:
    r = sub.add_parser("predict", help="segment images with no prompt")
    r.add_argument("--model", required=True, help="run or export folder, or a Hugging Face Hub repo id (user/name)")
    r.add_argument("inputs", nargs="+", help="image files, folders, or .txt lists of image paths")
    r.add_argument(
        "--out",
        required=True,
        help="folder for masks/, overlays/ and predictions.csv; a rerun into it skips the images already done",
    )
    r.add_argument("--no-overlay", action="store_true", help="write masks only")
    _engine_option(r)
    _inference_options(r)


def _serve_parsers(sub) -> None:
    """`serve` and `push`: a model for people and for the Hub."""
    s = sub.add_parser("serve", help="a web page and an HTTP API for a model (needs samsp[serve])")
    s.add_argument("--model", required=True, help="run or export folder, or a Hugging Face Hub repo id (user/name)")
    s.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1, this machine only)")
    s.add_argument("--port", type=int, default=8000)
    s.add_argument("--max-upload-mb", type=float, default=20, help="largest request body (default: 20 MiB)")
    s.add_argument("--max-megapixels", type=float, default=40, help="largest image (default: 40 megapixels)")
    _engine_option(s)
    s.add_argument(
        "--prefix-engine",
        default="auto",
        choices=PREFIX_ENGINES,
        help="PyTorch engine: what computes the encoder's frozen prefix of each upload; auto (default): OpenVINO on "
        "a CPU when installed (compiled at start-up, about 15 s; answers about 1.7x faster, BENCHMARKS.md), else "
        "PyTorch; torch starts at once",
    )
    _inference_options(s, batches=False)

    h = sub.add_parser("push", help="upload a model and its card to the Hugging Face Hub")
    h.add_argument("--model", required=True, help="run, checkpoint or export folder")
    h.add_argument("--repo", required=True, help="Hub repository id, user/name (created if missing)")
    h.add_argument("--private", action="store_true", help="create the repository as private")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="samsp", description="SAM that segments with no prompt (SAM-SP).")
    p.add_argument("--debug", action="store_true", help="show full tracebacks")
    sub = p.add_subparsers(dest="command", required=True)

    _train_parser(sub)
    _evaluate_parser(sub)
    _predict_parser(sub)
    x = sub.add_parser("export", help="merge LoRA into the encoder and write a standalone model")
    x.add_argument("--model", required=True, help="run folder")
    x.add_argument("--out", required=True, help="export folder")
    x.add_argument(
        "--format",
        default="safetensors",
        choices=("safetensors", "onnx"),
        help="safetensors (default): a full samsp model; onnx: samsp.onnx, the whole prompt-free pipeline",
    )
    x.add_argument(
        "--quantize",
        choices=("int8",),
        help="onnx only: int8 weights, activations quantised per batch at run time (ONNX Runtime dynamic "
        "quantisation); check its accuracy on your data before using it",
    )

    c = sub.add_parser("check-data", help="check every image/mask pair without training")
    c.add_argument("folder", nargs="?", help="folder with images/ and masks/ (the same as --data)")
    c.add_argument("--workers", type=int, default=0, help="decoding processes (default: 0, in-process)")
    _data_options(c)
    _serve_parsers(sub)

    d = sub.add_parser("demo", help="the main job: SAM-SP on Kvasir-SEG vs zero-shot LiteMedSAM (~15 min CPU)")
    d.add_argument("--data", help="Kvasir-SEG folder (default: download it, with a network)")
    d.add_argument("--out", default="runs/kvasir-demo")
    d.add_argument("--train-size", type=int, default=320, help="PraNet training images used (default: 320)")
    d.add_argument("--minutes", type=float, default=7.0, help="training-loop budget on the CPU (default: 7)")
    d.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a train setting")
    return p


def _train(args: argparse.Namespace) -> None:
    from .training.trainer import train

    overrides = list(args.set)
    for key, value in vars(args).items():
        if "." in key and value is not None:
            overrides.append(f"{key}={value}")
    if args.no_self_prompt:
        overrides.append("model.self_prompt=false")
    if args.no_distill:
        overrides.append("loss.distill=false")
    overrides += [f"data.{k}={v}" for k, v in _data_settings(args).items()]
    if args.resume:
        train(resume=args.resume)
    else:
        train(out=args.out, config_path=args.config, overrides=overrides)


def _evaluate(args: argparse.Namespace) -> None:
    from .evaluation.report import format_table

    if args.pred or args.gt:
        if not (args.pred and args.gt) or args.model:
            raise SamspError("give --pred and --gt together (and no --model) to score a folder of masks")
        from .evaluation.folders import evaluate_mask_folders

        summary = evaluate_mask_folders(args.pred, args.gt, args.out, mask_suffix=args.mask_suffix)
    else:
        if not (args.model and (args.data or args.csv)):
            raise SamspError("give --model RUN_DIR and --data FOLDER or --csv FILE (or --pred and --gt)")
        from .data.sources import all_pairs
        from .data.splits import read_id_list, select
        from .evaluation.evaluate import evaluate, evaluate_predictor

        pairs = all_pairs(_data_config(args))
        if args.ids:
            pairs = select(pairs, read_id_list(args.ids), args.ids)
        if args.engine == "torch":
            options = {"precision": args.precision, "iterations": args.iterations, "flips": args.flips}
            model, title = _predictor(args).model, f"{Path(args.model).name} ({args.prompt})"
            options |= {"prompt": args.prompt, "batch_size": args.batch_size} | _part_size(args)
            summary = evaluate(model, pairs, args.out, title=title, **options)
        else:
            if args.prompt != "none":
                raise SamspError(f"--prompt {args.prompt}: the exported graph prompts itself; use --engine torch")
            title = f"{Path(args.model).name} ({args.engine})"
            summary = evaluate_predictor(_onnx_predictor(args), pairs, args.out, title=title, **_part_size(args))
    print(format_table(summary))
    print(f"wrote {Path(args.out) / 'per_image.csv'} and summary.json")


def _part_size(args: argparse.Namespace) -> dict[str, int]:
    """--part-size when given (evaluate's own default otherwise, so the number lives in one place)."""
    return {} if args.part_size is None else {"part_size": args.part_size}


def _predict(args: argparse.Namespace) -> None:
    from .inference.bulk import predict_files

    predictor = _predictor(args, args.inputs) if args.engine == "torch" else _onnx_predictor(args)
    rows = predict_files(predictor, args.inputs, args.out, overlays=not args.no_overlay)
    empty = sum(r["fallback"] for r in rows)
    print(
        f"wrote {len(rows)} masks to {Path(args.out) / 'masks'}" + (f" ({empty} with nothing found)" if empty else "")
    )


def _export(args: argparse.Namespace) -> None:
    if args.format == "onnx":
        from .inference.onnx_engine import ONNX_NAME
        from .inference.onnx_export import export_onnx

        out, diff = export_onnx(args.model, args.out, quantize=args.quantize)
        print(f"wrote {out / ONNX_NAME} (largest probability difference, ONNX Runtime vs PyTorch: {diff:.2e})")
        return
    if args.quantize:
        raise SamspError("--quantize needs --format onnx")
    from .inference.export import export_model

    out, diff = export_model(args.model, args.out)
    print(f"wrote the merged model to {out} (largest probability change from merging: {diff:.2e})")


def _check(args: argparse.Namespace) -> int:
    from .data.checks import check_pairs
    from .data.sources import all_pairs

    if args.folder and args.data:
        raise SamspError("give the data folder once: as the argument or as --data")
    args.data = args.data or args.folder
    if not (args.data or args.csv):
        raise SamspError("give a data folder (samsp check-data DATA/) or --csv FILE")
    report = check_pairs(all_pairs(_data_config(args), labelled=False), workers=args.workers)
    print(report.format())
    return 0 if report.ok else 1


def _serve(args: argparse.Namespace) -> None:
    try:
        from .serve.server import serve
        from .serve.worker import Limits
    except ImportError as err:
        raise SamspError(f"samsp serve needs FastAPI and uvicorn ({err}): pip install 'samsp[serve]'") from err

    if args.max_upload_mb <= 0 or args.max_megapixels <= 0:
        raise SamspError("--max-upload-mb and --max-megapixels must be positive")
    limits = Limits(max_bytes=int(args.max_upload_mb * 2**20), max_pixels=int(args.max_megapixels * 1e6))
    serve(
        args.model,
        args.host,
        args.port,
        precision=args.precision,
        iterations=args.iterations,
        flips=args.flips,
        checkpoint=args.checkpoint,
        limits=limits,
        engine=args.engine,
        prefix_engine=args.prefix_engine,
    )


def _push(args: argparse.Namespace) -> None:
    from .modeling.persistence import push_to_hub

    url = push_to_hub(args.model, args.repo, private=args.private)
    print(f"uploaded {args.model} to {url}")


def _demo(args: argparse.Namespace) -> None:
    from .demo import format_rows, run_demo

    result = run_demo(args.data, args.out, train_size=args.train_size, minutes=args.minutes, overrides=args.set)
    print(format_rows(result))


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    if not args.debug:
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
    commands = {
        "train": _train,
        "evaluate": _evaluate,
        "predict": _predict,
        "export": _export,
        "check-data": _check,
        "serve": _serve,
        "push": _push,
        "demo": _demo,
    }
    try:
        return commands[args.command](args) or 0
    except SamspError as err:
        if args.debug:
            raise
        print(f"samsp: error: {err}", file=sys.stderr)
        return 2
    except Preempted as stop:
        print(f"samsp: {stop}", file=sys.stderr)
        return 128 + signal.Signals[stop.signal_name].value
    except KeyboardInterrupt:
        print("samsp: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
