"""The Data step's "Check deeper" through the real window: a real deep check (engine.audit.deep, the default
backbone's offline weights) of a small dataset with planted problems, its three lists, their one-click fixes
recorded as the project's corrections, and a second check that no longer asks about what the user kept.

Every wait arms `qtbot.waitSignal` before the click that triggers it; no test sleeps.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw
from PySide6.QtCore import Qt

from engine.project import apply_corrections
from gui_support import load

CHECK_TIMEOUT_MS = 120_000
SIDE = 48                       # pixels: small, yet not "tiny" to the odd-image check (under 32)
SHAPES = ("circles", "squares", "triangles")


def shapes_picture(kind: str, rng: np.random.Generator) -> Image.Image:
    """Three shapes of one kind in random colours and places on a smooth random background: every picture
    its own, so only the planted copy is a near-duplicate."""
    background = rng.integers(0, 256, (12, 12, 3)).astype(np.uint8)
    image = Image.fromarray(background).resize((SIDE, SIDE), Image.BICUBIC)
    draw = ImageDraw.Draw(image)
    for _ in range(3):
        size = int(rng.integers(8, 16))
        x, y = (int(v) for v in rng.integers(2, SIDE - size - 2, 2))
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        box = (x, y, x + size, y + size)
        if kind == "circles":
            draw.ellipse(box, fill=colour)
        elif kind == "squares":
            draw.rectangle(box, fill=colour)
        else:
            draw.polygon([(box[0], box[3]), (box[2], box[3]), ((box[0] + box[2]) // 2, box[1])], fill=colour)
    return image


@pytest.fixture
def planted(tmp_path) -> dict[str, Path]:
    """train/ and test/ folders of three shape classes, with a cropped and resized copy of a test picture in
    train, an all-black picture, and a circles picture filed under squares."""
    root, rng = tmp_path / "shapes", np.random.default_rng(0)
    for split, count in (("train", 8), ("test", 3)):
        for kind in SHAPES:
            folder = root / split / kind
            folder.mkdir(parents=True)
            for index in range(count):
                shapes_picture(kind, rng).save(folder / f"{kind}_{index}.png")
    source = root / "test" / "circles" / "circles_0.png"
    copy = root / "train" / "circles" / "copy_of_test.png"
    Image.open(source).crop((2, 1, SIDE - 1, SIDE - 2)).resize((52, 52)).save(copy)
    black = root / "train" / "squares" / "black.png"
    Image.new("RGB", (SIDE, SIDE)).save(black)
    mislabelled = root / "train" / "squares" / "wrong_label.png"
    shapes_picture("circles", rng).save(mislabelled)
    return {"root": root, "source": source, "copy": copy, "black": black, "mislabelled": mislabelled}


def check_deeper(qtbot, window, button):
    """Click `button` and wait for the real check's answer."""
    with qtbot.waitSignal(window.deep_check_finished, timeout=CHECK_TIMEOUT_MS) as finished:
        button.click()
    return finished.args[0]


def cell(findings, row: int, column: int, role=Qt.ItemDataRole.DisplayRole):
    return findings.model.data(findings.model.index(row, column), role)


def test_check_deeper_lists_the_planted_problems_and_records_the_fixes(qtbot, window, planted, tmp_path):
    load(qtbot, window, [planted["root"]])
    panel, state = window.data_panel, window.state
    view, dialog = panel.deep_check, panel.deep_check_dialog
    assert panel.deep_check_button.isEnabled() and not dialog.isVisible()

    result = check_deeper(qtbot, window, panel.deep_check_button)
    assert dialog.isVisible() and view.tabs.isVisible()
    found = (len(result.label_issues), len(result.near_duplicates), len(result.odd_samples))
    assert view.counts() == found == (1, 1, 1)
    assert "likely label errors" in view.status.text() and "Likely label errors" in view.status.toolTip()
    assert panel.deep_check_note.text() == "Deep check: 1 maybe mislabelled, 1 near-duplicate pair, 1 odd image"
    assert dialog.check_again_button.isEnabled()
    fix_the_label_issue(qtbot, view, state, result, planted)
    pair = fix_the_pair(view, state, result, planted)
    fix_the_odd_sample(view, state, result, planted)
    report = state.report
    assert len(apply_corrections(report, dict(state.corrections)).samples) == len(report.samples), \
        "all kept in the end: nothing changes for the next run"
    assert window.results_panel.corrections_note.text() == ""

    dialog.hide()
    panel.deep_check_button.click()                # shows the last check again: no new one
    assert dialog.isVisible() and view.result is result and not window.deep_checks.slot.running
    again = check_deeper(qtbot, window, dialog.check_again_button)     # does not ask again about what was kept
    assert str(planted["mislabelled"]) not in [i.path for i in again.label_issues]
    assert pair.key not in [p.key for p in again.near_duplicates]
    assert str(planted["black"]) not in [o.path for o in again.odd_samples]
    assert view.counts() == (len(again.label_issues), len(again.near_duplicates), len(again.odd_samples))

    load(qtbot, window, [another_dataset(tmp_path / "other")])     # another dataset: the lists go
    assert not dialog.isVisible() and view.result is None and panel.deep_check_note.text() == ""


def fix_the_label_issue(qtbot, view, state, result, planted) -> None:
    """The circles picture filed under squares, with its picture: relabel, undo, keep."""
    issues = view.label_issues
    assert [Path(i.path).name for i in result.label_issues] == ["wrong_label.png"]
    assert (cell(issues, 0, 2), cell(issues, 0, 3)) == ("squares", "circles")
    mislabelled = str(planted["mislabelled"])
    qtbot.waitUntil(lambda: mislabelled in view.look.thumbnails, timeout=10_000)   # decoded once painted
    picture = cell(issues, 0, 0, Qt.ItemDataRole.DecorationRole)
    assert picture is view.look.thumbnails[mislabelled] and not picture.isNull()
    assert issues.relabel_button.text() == "Relabel as circles"
    issues.relabel_button.click()
    assert state.corrections[mislabelled] == {"action": "relabel", "label": "circles"}
    assert cell(issues, 0, 6) == "moved to circles"
    issues.undo_button.click()
    assert mislabelled not in state.corrections and cell(issues, 0, 6) == ""
    issues.keep_button.click()
    assert state.corrections[mislabelled] == {"action": "keep", "label": None}
    assert cell(issues, 0, 6) == "kept as it is"


def fix_the_pair(view, state, result, planted):
    """The planted copy and its test picture, a leak: exclude the test one, undo, keep both."""
    pairs = view.duplicates
    pair = result.near_duplicates[0]
    assert {pair.a, pair.b} == {str(planted["copy"]), str(planted["source"])} and pair.across_splits
    assert "leak" in cell(pairs, 0, 5) and "figure inflated" in cell(pairs, 0, 5)
    view.tabs.setCurrentWidget(pairs)
    assert pairs.exclude_button.text() == "Exclude circles_0.png"       # the one in test, not the train copy
    pairs.exclude_button.click()
    assert state.corrections[str(planted["source"])] == {"action": "exclude", "label": None}
    assert cell(pairs, 0, 6) == "circles_0.png excluded"
    pairs.undo_button.click()
    assert str(planted["source"]) not in state.corrections
    pairs.keep_button.click()
    assert state.corrections[pair.key] == {"action": "keep", "label": None}
    assert cell(pairs, 0, 6) == "both kept"
    return pair


def fix_the_odd_sample(view, state, result, planted) -> None:
    """The black picture: exclude, undo, keep."""
    odd, black = view.odd_samples, str(planted["black"])
    assert [(Path(o.path).name, o.reason.split(" (")[0]) for o in result.odd_samples] == [("black.png", "nearly blank")]
    view.tabs.setCurrentWidget(odd)
    odd.exclude_button.click()
    assert state.corrections[black]["action"] == "exclude" and cell(odd, 0, 4) == "excluded"
    odd.undo_button.click()
    odd.keep_button.click()
    assert state.corrections[black] == {"action": "keep", "label": None}


def another_dataset(root: Path) -> Path:
    for kind in SHAPES[:2]:
        (root / kind).mkdir(parents=True)
        for index in range(6):
            shapes_picture(kind, np.random.default_rng(index)).save(root / kind / f"{index}.png")
    return root


def test_a_pair_says_which_figure_it_inflates_and_which_one_to_exclude():
    from engine.audit.deep import NearDuplicate
    from gui.deep_check_view import excluded_of, leak_text
    leak = NearDuplicate("/d/test/x.png", "/d/train/y.png", 0.97, ("test", "train"))
    assert leak_text(leak) == "leak: test figure inflated" and excluded_of(leak) == "/d/test/x.png"
    to_val = NearDuplicate("/d/a.png", "/d/b.png", 0.95, ("train", "val"))
    assert leak_text(to_val) == "leak: validation figure inflated" and excluded_of(to_val) == "/d/b.png"
    twice = NearDuplicate("/d/a.png", "/d/b.png", 0.99, ("train", "train"))
    assert leak_text(twice) == "the same train sample twice" and excluded_of(twice) == "/d/b.png"


def test_a_failed_check_is_one_line_in_its_window(qtbot):
    from gui.deep_check_view import DeepCheckView
    view = DeepCheckView()
    qtbot.addWidget(view)
    view.show_running()
    assert view.progress.isVisibleTo(view) and view.cancel_button.isVisibleTo(view)
    view.show_error("no weights for efficientnet_lite0\non this machine")
    assert "\n" not in view.status.text() and "no weights for efficientnet_lite0 on this machine" in view.status.text()
    assert not view.progress.isVisibleTo(view) and not view.tabs.isVisibleTo(view)


def test_near_duplicates_are_moved_into_one_split_only_when_transferlab_chose_it(qtbot, window, tmp_path):
    from engine.audit.deep import DeepReport
    from engine.data.scan import scan_dataset
    chosen = scan_dataset(another_dataset(tmp_path / "chosen"), seed=0)           # no split given: ours
    by_split = {split: [s.path for s in chosen.split(split)] for split in ("train", "val", "test")}
    group = [by_split["train"][0], by_split["train"][1], by_split["test"][0]]
    result = DeepReport([], [], [], "efficientnet_lite0", len(chosen.samples), 1.0, groups=[group])
    view = window.data_panel.deep_check                  # wired to the window's controller, as a check leaves it
    view.show_result(result, chosen, {})
    button = view.duplicates.together_button
    assert not button.isHidden() and button.isEnabled() and "1 to move" in button.text()
    qtbot.mouseClick(button, Qt.MouseButton.LeftButton)
    assert dict(window.state.corrections) == {group[2]: {"action": "move", "label": None, "split": "train"}}
    assert {s.split for s in apply_corrections(chosen, dict(window.state.corrections)).samples
            if s.path in group} == {"train"}
    assert not button.isEnabled()
    another_dataset(tmp_path / "given" / "train")
    another_dataset(tmp_path / "given" / "test")
    given = scan_dataset(tmp_path / "given", seed=0)                              # train/ and test/: the user's
    assert given.split_given
    view.show_result(DeepReport([], [], [], "x", 1, 1.0, groups=[[s.path for s in given.samples[:2]]]), given, {})
    assert button.isHidden()
