"""Project files and label corrections (engine side; the GUI round trip is tested with the window)."""
import json

import numpy as np
import pytest
from PIL import Image

from engine.data.scan import scan_dataset
from engine.models.catalog import create_model
from engine.outputs.gradcam import grad_cam, overlay
from engine.project import Project, ProjectError, RunRecord, apply_corrections, load_project


def test_save_and_load_round_trip(tmp_path):
    project = Project(dataset_sources=[str(tmp_path / "data")], backbone="efficientnet_lite0",
                      frozen_parameters=["conv_stem.weight"], config={"epochs": 3})
    project.exclude(str(tmp_path / "data" / "a.png"))
    project.relabel(str(tmp_path / "data" / "b.png"), "green")
    project.add_run(RunRecord(str(tmp_path / "run"), "2026-11-23", "efficientnet_lite0", "completed", 0.9))
    saved = project.save(tmp_path / "work")
    assert saved.endswith("work.tlproj")
    loaded = load_project(saved)
    assert loaded.to_dict() | {"saved": None} == project.to_dict() | {"saved": None}


@pytest.mark.parametrize("content", ["not json {", json.dumps({"format": "other/1"}), json.dumps([1, 2]),
                                     json.dumps({"format": "transferlab-project/1", "corrections": 5})])
def test_corrupt_or_foreign_file_is_refused_and_untouched(tmp_path, content):
    path = tmp_path / "bad.tlproj"
    path.write_text(content)
    with pytest.raises(ProjectError):
        load_project(path)
    assert path.read_text() == content


def test_relocate_rewrites_paths_under_the_moved_folder(tmp_path):
    project = Project(dataset_sources=["/old/data"])
    project.exclude("/old/data/red/x.png")
    project.relocate("/old/data", "/new/place")
    assert project.dataset_sources == ["/new/place"]
    assert list(project.corrections) == ["/new/place/red/x.png"]


def test_corrections_exclude_and_relabel_without_touching_files(colour_dataset):
    report = scan_dataset(colour_dataset)
    red = [s for s in report.samples if report.classes[s.label] == "red"]
    blue = [s for s in report.samples if report.classes[s.label] == "blue"]
    corrected = apply_corrections(report, {red[0].path: {"action": "exclude", "label": None},
                                           blue[0].path: {"action": "relabel", "label": "red"}})
    paths = {s.path: corrected.classes[s.label] for s in corrected.samples}
    assert red[0].path not in paths and paths[blue[0].path] == "red"
    assert any(p.path == red[0].path and "excluded" in p.reason for p in corrected.problems)
    assert corrected.content_hash != report.content_hash
    assert (colour_dataset / "red" / red[0].path.split("/")[-1]).exists()


@pytest.mark.parametrize("corner", [(0, 0), (128, 158)])
def test_grad_cam_points_at_the_cat(corner):
    """A real cat photo pasted into one corner of a grey canvas: the heat sits on the cat."""
    skimage_data = pytest.importorskip("skimage.data")
    bundle = create_model("efficientnet_lite0")
    canvas = Image.new("RGB", (256, 256), (128, 128, 128))
    canvas.paste(Image.fromarray(skimage_data.chelsea()).resize((128, 98)), corner)
    heat, index, prob = grad_cam(bundle.model, canvas, bundle.preprocessing)
    assert heat.shape == (224, 224) and 0 <= heat.min() and heat.max() <= 1
    assert index == 285 and 0 < prob <= 1            # ImageNet 285: Egyptian cat
    inside = np.zeros_like(heat, bool)               # the canvas is resized to 256, then centre-cropped by 16
    x0, y0 = corner[0] - 16, corner[1] - 16
    inside[max(0, y0):y0 + 98, max(0, x0):x0 + 128] = True
    assert heat[inside].mean() > 4 * heat[~inside].mean()
    rgb = overlay(canvas, heat, bundle.preprocessing)
    assert rgb.shape == (224, 224, 3) and rgb.dtype == np.uint8
