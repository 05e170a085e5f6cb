"""OpenVINO export: the verified ONNX export (at any precision) converted to OpenVINO IR (`model.xml` +
`model.bin` in a folder), the model card in the IR's own runtime info and beside it as `model.json`, and
verified by the OpenVINO runtime against the ONNX file it came from before the folder is put in place.

`IrSession` runs an IR behind the small part of onnxruntime's InferenceSession the classifiers use
(`run`, `get_inputs`, `get_modelmeta`), so `predict`, Try it and the precision check take an IR folder
exactly as they take an `.onnx` file. OpenVINO is an optional dependency (`pip install openvino`); the
standalone app leaves it out (about 100 MiB, over the bundle's 1 GB limit).

fp32 runs with OpenVINO's f32 inference precision: on CPUs with AMX it would otherwise compute in bf16.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

IR_FILE = "model.xml"
CARD_KEY = "transferlab_card"
VERIFY_SAMPLES = 64


class OpenVinoMissing(ValueError):
    """The openvino package is not installed."""


def _openvino():
    try:
        import openvino
    except ImportError:
        raise OpenVinoMissing("OpenVINO export needs the openvino package (pip install openvino); the standalone "
                              "app leaves it out to stay under 1 GB: use the ONNX file, or export from a Python "
                              "install") from None
    return openvino


def ir_file(path: str | os.PathLike) -> Path | None:
    """The IR's `.xml` for a folder holding `model.xml` or an `.xml` path; None for anything else."""
    path = Path(path)
    if path.suffix.lower() == ".xml":
        return path
    if path.is_dir() and (path / IR_FILE).is_file():
        return path / IR_FILE
    return None


class IrSession:
    """An OpenVINO IR compiled for the CPU, answering like an onnxruntime session."""

    def __init__(self, xml: str | os.PathLike):
        ov = _openvino()
        core = ov.Core()
        model = core.read_model(str(xml))
        card = json.loads(model.get_rt_info([CARD_KEY]).astype(str)) if model.has_rt_info([CARD_KEY]) else {}
        self.metadata = {key: json.dumps(value, ensure_ascii=False) for key, value in card.items()}
        config = {"INFERENCE_PRECISION_HINT": "f32"} if card.get("precision", "fp32") == "fp32" else {}
        self.compiled = core.compile_model(model, "CPU", config)
        self._request = self.compiled.create_infer_request()

    def run(self, _names, feeds: dict) -> list[np.ndarray]:
        results = self._request.infer(feeds)
        return [np.array(results[output]) for output in self.compiled.outputs]

    def get_inputs(self) -> list:
        return [SimpleNamespace(name=self.compiled.inputs[0].get_any_name())]

    def get_modelmeta(self):
        return SimpleNamespace(custom_metadata_map=self.metadata)


def read_ir_card(xml: str | os.PathLike) -> dict:
    """The model card an IR carries (without compiling it)."""
    model = _openvino().Core().read_model(str(xml))
    return json.loads(model.get_rt_info([CARD_KEY]).astype(str)) if model.has_rt_info([CARD_KEY]) else {}


def export_openvino(run_or_checkpoint, out_dir: str | os.PathLike, *, precision: str = "fp32",
                    gate_points: float | None = None, progress=None, control=None, **options):
    """A verified IR folder of a run: the ONNX export at `precision` (verified and, below fp32, checked
    against fp32 as `export_model` does), converted, then run by OpenVINO on the run's validation and test
    samples against that ONNX file. Returns the ONNX export's ExportResult with `path` the folder and
    `openvino` the IR's own verification."""
    from engine.core.files import write_json, write_text
    from engine.outputs.export import ExportError, ExportSteps, export_model, read_metadata
    from engine.outputs.precision import labelled_samples
    from engine.outputs.predict import model_modality, resolve_checkpoint
    ov = _openvino()
    target = Path(out_dir)
    if target.suffix.lower() in (".onnx", ".xml") or (target.exists() and not target.is_dir()):
        raise ExportError(f"the OpenVINO export is a folder (model.xml, model.bin, model.json), not {target.name!r}")
    if target.is_dir() and any(target.iterdir()) and not (target / IR_FILE).is_file():
        raise ExportError(f"{target} is a folder with other files in it: choose an empty or new folder")
    modality = model_modality(run_or_checkpoint)
    _, run_dir = resolve_checkpoint(run_or_checkpoint)
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="transferlab-openvino-", dir=target.parent) as scratch:
        scratch = Path(scratch)
        source = scratch / "model.onnx"
        result = export_model(run_or_checkpoint, source, precision=precision, gate_points=gate_points,
                              progress=progress, control=control, **options)
        step = ExportSteps(progress, control)
        step("convert to OpenVINO")
        began = time.monotonic()
        card = {**read_metadata(source), "runtime": "openvino", "openvino": ov.__version__}
        folder = scratch / "ir"
        folder.mkdir()
        try:
            model = ov.convert_model(str(source))
            model.set_rt_info(json.dumps(card, ensure_ascii=False), [CARD_KEY])
            ov.save_model(model, str(folder / IR_FILE), compress_to_fp16=False)
        except Exception as exc:  # noqa: BLE001 - OpenVINO raises its own types for graphs it cannot take
            from engine.core.errors import first_line
            raise ExportError(f"OpenVINO could not convert the verified ONNX file: {first_line(exc)}") from None
        step("verify OpenVINO")
        labelled = labelled_samples(run_dir, modality)
        if result.precision == "fp32":
            samples = [s for samples, _ in labelled.values() for s in samples] or _verification_inputs(modality)
            samples = samples[::max(1, len(samples) // VERIFY_SAMPLES)][:VERIFY_SAMPLES]
            verification = _verify_ir(modality, source, folder / IR_FILE, samples, options.get("tolerance", 1e-3))
        else:
            verification = _check_reduced_ir(modality, folder / IR_FILE, labelled, result.precision_check)
        verification["seconds"] = round(time.monotonic() - began, 2)
        card["openvino_verification"] = verification
        model.set_rt_info(json.dumps(card, ensure_ascii=False), [CARD_KEY])
        ov.save_model(model, str(folder / IR_FILE), compress_to_fp16=False)
        write_json(folder / "model.json", {k: v for k, v in card.items() if k != "tokenizer"})
        if "tokenizer" in card:
            write_text(folder / "model.tokenizer.json", card["tokenizer"])
        _replace_folder(folder, target)
    result.path, result.sidecar = str(target), str(target / "model.json")
    result.openvino = verification
    return result


def _logits(classifier, samples: list) -> np.ndarray:
    return np.concatenate([classifier.logits(samples[i:i + 16]) for i in range(0, len(samples), 16)])


def _verify_ir(modality, onnx_file: Path, xml: Path, samples: list, tolerance: float) -> dict:
    """An fp32 IR against its ONNX source on `samples`: logits within `tolerance`, the same top-1."""
    from engine.outputs.export import ExportError
    ref = _logits(modality.classifier(onnx_file, "onnx"), samples)
    new = _logits(modality.classifier(xml, "onnx"), samples)
    diff = float(np.abs(ref - new).max())
    agreement = float((ref.argmax(1) == new.argmax(1)).mean())
    if not (diff <= tolerance and agreement == 1.0):
        raise ExportError(f"the OpenVINO model does not answer like the ONNX file: max |logit difference| "
                          f"{diff:.3g} (tolerance {tolerance:g}), top-1 agreement {agreement:.1%}")
    return {modality.nouns: len(samples), "max_abs_diff": diff, "top1_agreement": agreement,
            "against": "the fp32 ONNX file (onnxruntime)"}


def _check_reduced_ir(modality, xml: Path, labelled: dict, check: dict) -> dict:
    """An int8/fp16 IR, whose kernels round otherwise than onnxruntime's, held to the precision check's gate:
    its accuracy on the same validation and test samples against the fp32 model's."""
    from engine.outputs.export import ExportError
    candidate = modality.classifier(xml, "onnx")
    samples = fp32_correct = correct = 0
    for split, (inputs, labels) in labelled.items():
        figures = check["splits"][split]
        samples += len(labels)
        fp32_correct += figures["fp32_accuracy"] * len(labels)
        correct += int((_logits(candidate, inputs).argmax(1) == labels).sum())
    drop = round(100 * (fp32_correct - correct) / samples, 2)
    if drop > check["gate_points"]:
        raise ExportError(f"the {check['asked']} OpenVINO model loses {drop:.2f} accuracy points against the fp32 "
                          f"model on {samples} {modality.nouns}, more than the {check['gate_points']:g}-point gate")
    return {modality.nouns: samples, "accuracy": round(correct / samples, 4), "accuracy_drop_points": drop,
            "against": "the fp32 model, on the run's validation and test samples"}


def _verification_inputs(modality) -> list:
    from engine.outputs.export import ExportError
    raise ExportError(f"no validation or test {modality.nouns} of the run to verify the OpenVINO model on")


def _replace_folder(new: Path, target: Path) -> None:
    """`target` becomes `new` (same file system): an earlier export there is moved aside first and removed
    once the new one is in place, so a failure leaves the earlier export whole."""
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        os.replace(target, old)
    try:
        os.replace(new, target)
    except OSError:
        if old is not None:
            os.replace(old, target)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
