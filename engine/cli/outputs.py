"""The `export` and `predict` commands, registered into engine.cli.main's parser by `register(subparsers)`.

Heavy modules are imported inside the commands so `--help` stays instant, and `predict` on an `.onnx`
file never imports torch.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from engine.cli.progress import TerminalProgress


def register(subparsers) -> None:
    p = subparsers.add_parser("export", help="export a run to a verified ONNX file (and/or plain weights)",
                              description="Export a run folder or checkpoint. The ONNX file is checked "
                                          "against PyTorch on real images before it is written.")
    p.add_argument("run", help="run folder or TransferLab .safetensors checkpoint")
    p.add_argument("--onnx", metavar="OUT.onnx", help="verified ONNX file to write (plus OUT.json)")
    p.add_argument("--openvino", metavar="DIR",
                   help="verified OpenVINO IR folder to write (model.xml, model.bin, model.json), at --precision; "
                        "needs the openvino package")
    p.add_argument("--safetensors", metavar="OUT.safetensors",
                   help="plain timm state dict with flat metadata, for PyTorch users")
    p.add_argument("--verify-images", nargs="+", metavar="PATH",
                   help="images or folders to verify on (default: the run's validation images); for a text "
                        "model, texts")
    p.add_argument("--tolerance", type=float, default=1e-3, help="max |logit difference| (default 1e-3)")
    p.add_argument("--exporter", default="auto", choices=["auto", "dynamo", "legacy"],
                   help="auto: torch.export-based, falling back to the TorchScript-based one")
    p.add_argument("--dynamic-size", action="store_true",
                   help="make height and width dynamic too (not only the batch)")
    p.add_argument("--precision", default="fp32", choices=["fp32", "fp16", "int8"],
                   help="fp32 (default); int8: about a third of the size and faster on a CPU; fp16: half the size, "
                        "for GPUs. A smaller file is verified against the fp32 one on the run's validation and test "
                        "samples and refused (the fp32 file written instead, exit status 1) when it loses more "
                        "than --gate points of accuracy")
    p.add_argument("--gate", type=float, default=None, metavar="POINTS",
                   help="with --precision fp16/int8: the most accuracy points the smaller file may lose (default 1)")
    p.set_defaults(func=cmd_export)

    p = subparsers.add_parser("predict", help="top-k labels for images or texts, from a run, checkpoint or .onnx",
                              description="Print one JSON object per image (or text): path, label, score, top_k. "
                                          "For a text model each argument is a text, or a .txt file (one text "
                                          "per line) or a .csv/.tsv file (its text column).")
    p.add_argument("model", help="run folder, .safetensors checkpoint, exported .onnx file or OpenVINO IR folder")
    p.add_argument("images", nargs="*", metavar="IMAGE_OR_FOLDER_OR_TEXT")
    p.add_argument("--text-file", default=None, help="text models: a file of texts, one per line")
    p.add_argument("--text-column", default=None, help="text models: the text column of a .csv/.tsv input")
    p.add_argument("--top-k", type=int, default=5)
    p.add_argument("--threshold", type=float, default=0.0,
                   help="below this top-1 probability the label is 'unknown' too (default 0: never)")
    p.add_argument("--accept", type=float, default=None, metavar="SHARE",
                   help="the share of the run's validation inputs the unknown score accepts (0.5-1; default: the "
                        "run's own, 0.95): inputs less like the training data are labelled 'unknown'")
    p.add_argument("--json", action="store_true",
                   help="one JSON object per line (the default output): path, label, score, nearest, ood_score, "
                        "threshold, top_k")
    p.add_argument("--csv", metavar="OUT.csv", help="also write the predictions as CSV")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--device", default="auto", metavar="auto|cpu|cuda|cuda:N|mps",
                   help="where a checkpoint runs: auto = a CUDA GPU, else Apple MPS, else the CPU "
                        "(an .onnx file runs on the CPU)")
    p.set_defaults(func=cmd_predict)

    p = subparsers.add_parser("suggest", help="which unlabelled images or texts to label next, and why",
                              description="Rank a pool of unlabelled samples by what labelling them would teach the "
                                          "run: the least certain, spread over what the model is unsure about "
                                          "(diverse mini-batch active learning).")
    p.add_argument("run", help="run folder or .safetensors checkpoint")
    p.add_argument("pool", nargs="*", metavar="IMAGE_OR_FOLDER_OR_TEXT", help="the unlabelled samples")
    p.add_argument("--count", type=int, default=20, help="how many to suggest (default 20)")
    p.add_argument("--text-file", default=None, help="text models: a file of texts, one per line")
    p.add_argument("--text-column", default=None, help="text models: the text column of a .csv/.tsv pool")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="one JSON object: suggestions (path, suggested, score, "
                                                       "runner_up, margin, unknown, reason), skipped, pool")
    p.set_defaults(func=cmd_suggest)


def cmd_export(args: argparse.Namespace) -> int:
    from engine.outputs.export import ExportError, export_model, export_weights
    from engine.outputs.openvino import export_openvino
    if not (args.onnx or args.openvino or args.safetensors):
        raise ExportError("say what to write: --onnx OUT.onnx, --openvino DIR and/or --safetensors OUT.safetensors")
    summary, refused = {}, False
    options = dict(verify=args.verify_images, tolerance=args.tolerance, exporter=args.exporter,
                   dynamic_size=args.dynamic_size, precision=args.precision, gate_points=args.gate)
    for target, export in ((args.onnx, export_model), (args.openvino, export_openvino)):
        if not target:
            continue
        with TerminalProgress() as progress:
            result = export(args.run, target, progress=progress, **options)
        for warning in result.warnings:
            print(f"warning: {warning}", file=sys.stderr)
        if summary:                       # --onnx and --openvino: the second result beside the first
            summary["openvino_export"] = result.to_dict()
        else:
            summary.update(result.to_dict())
        refused = _say_precision(result) or refused
    if args.safetensors:
        summary["safetensors"] = export_weights(args.run, args.safetensors)
    print(json.dumps(summary))
    return 1 if refused else 0


def _say_precision(result) -> bool:
    """One line on stderr for a smaller precision; True when it was refused (the fp32 file was written)."""
    if not result.precision_check:
        return False
    from engine.outputs.precision import PrecisionCheck
    check = PrecisionCheck.from_dict(result.precision_check)
    print(check.summary(), file=sys.stderr)
    return bool(check.refused)


def cmd_suggest(args: argparse.Namespace) -> int:
    from engine.active.suggest import suggest
    with TerminalProgress() as progress:
        found = suggest(args.run, args.pool, args.count, seed=args.seed, text_file=args.text_file,
                        text_column=args.text_column, progress=progress)
    for skipped in found["skipped"]:
        print(f"skipped {skipped['path']}: {skipped['reason']}", file=sys.stderr)
    if args.json:
        print(json.dumps(found, ensure_ascii=False, indent=2))
        return 0
    print(f"label these {len(found['suggestions'])} of {found['pool']} first (most uncertain first):")
    for rank, row in enumerate(found["suggestions"], start=1):
        print(f"{rank:3d}. {row['path']}  -> {row['suggested']}?  {row['reason']}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from engine.core import modality as modalities
    from engine.outputs.predict import load_classifier, predict_items, write_csv
    classifier = load_classifier(args.model, args.device)
    modality = modalities.of(classifier.meta)            # what the model classifies, as the file says
    items, skipped = modality.prediction_items(args.images, text_file=args.text_file, text_column=args.text_column)
    with TerminalProgress() as progress:
        report = predict_items(classifier, items, modality.prediction_input, top_k=args.top_k,
                               threshold=args.threshold, accept=args.accept, batch_size=max(1, args.batch_size), progress=progress)
    report.skipped[:0] = skipped
    payloads = dict(items)
    for prediction in report.predictions:
        record = prediction.to_dict()
        shown = {"path": record.pop("path"), **modality.prediction_fields(payloads[prediction.path]), **record}
        print(json.dumps(shown, ensure_ascii=False))
    for skipped in report.skipped:
        print(f"skipped {skipped['path']}: {skipped['reason']}", file=sys.stderr)
    if args.csv:
        write_csv(report, args.csv, args.top_k)
    if not report.predictions:
        raise ValueError(f"no {modality.noun} could be read" if report.skipped else f"no {modality.nouns} found")
    return 0
