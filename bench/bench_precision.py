"""Size, latency and accuracy of each export precision (fp32, int8, fp16) on real sets, as the export
measures them (engine.outputs.precision): one head-only run per backbone and set, then the three exports of
it, each verified against fp32 on the run's own validation and test samples.

    python bench/bench_precision.py [--sets fm-sessions,elpv4,fortunes8] [--models efficientnet_lite0,...]

Sets (made by bench/shifted_sets.py, ../shared/data/elpv_folder.py, bench/fortunes_csv.py):
  fm-sessions  Fashion-MNIST photos in train/val/test folders of different sessions (/data/fm-sessions)
  elpv4        ELPV solar-cell scans, 4 defect levels (/data/elpv4)
  fortunes8    8 Debian fortunes files, one text per row (/data/fortunes8.csv): the text encoder
Writes bench/out/precision.json and prints a table (latency: median of one session run, this machine).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, machine  # noqa: E402

from engine.outputs.export import export_model  # noqa: E402
from engine.outputs.openvino import export_openvino  # noqa: E402
from engine.outputs.precision import labelled_samples, latency_ms  # noqa: E402
from engine.outputs.predict import load_classifier, model_modality  # noqa: E402
from engine.training.config import TrainConfig  # noqa: E402
from engine.training.datasets import scan_any  # noqa: E402
from engine.training.trainer import Trainer  # noqa: E402

SETS = {"fm-sessions": Path("/data/fm-sessions"), "elpv4": Path("/data/elpv4"),
        "fortunes8": Path("/data/fortunes8.csv")}
IMAGE_MODELS = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")
TEXT_MODELS = ("all-minilm-l6-v2",)


def measure(set_name: str, backbone: str, folder: Path) -> list[dict]:
    report = scan_any(SETS[set_name], seed=0, encoder=backbone)
    run = folder / f"{set_name}-{backbone}"
    began = time.perf_counter()
    Trainer(report, TrainConfig(backbone=backbone, seed=0), run).fit()
    rows = [{"set": set_name, "backbone": backbone, "fit_s": round(time.perf_counter() - began, 1)}]
    samples = next(iter(labelled_samples(run, model_modality(run)).values()))[0][:16]
    for precision in ("fp32", "int8"):         # the OpenVINO runtime on the same files, this machine
        folder_ir = folder / f"{run.name}-{precision}-ir"
        export_openvino(run, folder_ir, precision=precision, gate_points=100)
        rows[0][f"openvino_{precision}_ms"] = latency_ms(load_classifier(folder_ir), samples)
    print(json.dumps(rows[0]), flush=True)
    for precision in ("int8", "fp16"):
        began = time.perf_counter()
        result = export_model(run, folder / f"{run.name}-{precision}.onnx", precision=precision, gate_points=100)
        check = result.precision_check
        rows.append({"set": set_name, "backbone": backbone, "precision": precision, "export_s":
                     round(time.perf_counter() - began, 1), **{k: check[k] for k in (
                         "fp32_bytes", "bytes", "size_ratio", "accuracy_drop_points", "splits", "latency_ms", "method",
                         "calibration")}, "refused_at_1_point": check["accuracy_drop_points"] > 1.0})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| set | model | precision | size (MB) | × fp32 | test acc. fp32 → this | val acc. fp32 → this | "
             "drop (points, val+test) | top-1 agreement (test) | unknown agreement (test) | batch 1 ms fp32 → this | "
             "batch 16 ms fp32 → this |", "|" + "---|" * 12]
    for row in rows:
        if "precision" not in row:
            continue
        test, val = row["splits"].get("test", {}), row["splits"].get("val", {})
        ms = row["latency_ms"]
        lines.append(
            f"| {row['set']} | {row['backbone']} | {row['precision']} | {row['bytes'] / 1e6:.1f} | "
            f"{row['size_ratio']:.2f} | {100 * test.get('fp32_accuracy', 0):.1f} → {100 * test.get('accuracy', 0):.1f} | "
            f"{100 * val.get('fp32_accuracy', 0):.1f} → {100 * val.get('accuracy', 0):.1f} | "
            f"{row['accuracy_drop_points']:+.2f} | {test.get('top1_agreement', 0):.3f} | "
            f"{test.get('unknown_agreement', float('nan')):.3f} | "
            f"{ms['fp32']['batch_1']:.1f} → {ms[row['precision']]['batch_1']:.1f} | "
            f"{ms['fp32']['batch_16']:.1f} → {ms[row['precision']]['batch_16']:.1f} |")
    lines += ["", "| set | model | OpenVINO fp32 batch 1 / 16 ms | OpenVINO int8 batch 1 / 16 ms |", "|---|---|---|---|"]
    for row in rows:
        if "openvino_fp32_ms" in row:
            fp32, int8 = row["openvino_fp32_ms"], row["openvino_int8_ms"]
            lines.append(f"| {row['set']} | {row['backbone']} | {fp32['batch_1']:.1f} / {fp32['batch_16']:.1f} | "
                         f"{int8['batch_1']:.1f} / {int8['batch_16']:.1f} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", default=",".join(SETS))
    parser.add_argument("--models", default=",".join(IMAGE_MODELS))
    parser.add_argument("--out", default=str(ROOT / "bench" / "out" / "precision.json"))
    args = parser.parse_args()
    print(machine(), flush=True)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-precision-") as folder:
        for set_name in args.sets.split(","):
            models = TEXT_MODELS if SETS[set_name].suffix == ".csv" else args.models.split(",")
            for backbone in models:
                rows += measure(set_name, backbone, Path(folder))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"machine": machine(), "rows": rows}, indent=2) + "\n", encoding="utf-8")
    print(table(rows))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TRANSFERLAB_DATA_DIR", tempfile.mkdtemp(prefix="bench-user-"))
    raise SystemExit(main())
