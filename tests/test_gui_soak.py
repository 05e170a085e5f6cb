"""A seeded random soak of the real window: a few hundred user actions across the steps (drop a dataset,
switch steps, train, pause, stop, search, export, open and save projects, select rows, predict, explain),
with events processed between them. It fails on any exception in a Qt slot (pytest-qt's capture), on an
action that takes too long, and on a task, QThread or Python thread left running once the window closed.

The seed is in the test's name: a failure replays exactly with `-k <seed>`.
"""
from __future__ import annotations

import random
import threading
import time
from pathlib import Path

import pytest
import shiboken6
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QMessageBox

from conftest import write_colour_dataset
from gui.export_dialog import ExportDialog
from gui_support import drop

LITE0 = "efficientnet_lite0"
TINY = dict(epochs=1, image_size=64, batch_size=8)
ACTION_LIMIT_S = 20               # one action (with its event processing) never takes longer
CLOSE_TIMEOUT_MS = 120_000


def write_text_csv(path: Path) -> Path:
    """A tiny table of texts in two classes."""
    rows = [(f"a lovely sunny day number {i}", "good") for i in range(6)]
    rows += [(f"an awful rainy night number {i}", "bad") for i in range(6)]
    path.write_text("text,label\n" + "".join(f"{text},{label}\n" for text, label in rows), encoding="utf-8")
    return path


class Soak:
    """The actions a user can take, each a method; `run` picks them with a seeded generator."""

    def __init__(self, qtbot, window, tmp_path: Path, rng: random.Random, texts: bool):
        self.qtbot, self.window, self.tmp, self.rng = qtbot, window, tmp_path, rng
        self.images = [write_colour_dataset(tmp_path / "three", per_class=4, size=24),
                       write_colour_dataset(tmp_path / "two", per_class=4, size=24,
                                            colours={"red": (220, 40, 40), "blue": (40, 60, 220)})]
        self.texts = [write_text_csv(tmp_path / "texts.csv")] if texts else []
        self.pools = [write_colour_dataset(tmp_path / "pool", per_class=2, size=24), tmp_path / "missing-pool"]
        if texts:
            (tmp_path / "pool.txt").write_text("a sunny morning\na rainy evening\na grey day\n", encoding="utf-8")
            self.pools.append(tmp_path / "pool.txt")
        self.projects: list[str] = []
        self.done: list[str] = []
        window.projects.ask_save_path = lambda: str(tmp_path / f"soak-{len(self.projects)}.tlproj")
        window.projects.ask_dataset_location = lambda _old: None
        window.state.search_backbones = [LITE0]

    def actions(self) -> list[tuple[int, object]]:
        """(weight, action): cheap ones often, those that start engine work less."""
        return [(8, self.switch_step), (4, self.drop_images), (1, self.drop_texts), (2, self.cancel_scan),
                (5, self.start_training), (1, self.start_search), (2, self.pause_or_resume), (1, self.stop),
                (2, self.export), (2, self.save_project), (1, self.open_project), (4, self.select_result),
                (2, self.select_run), (2, self.choose_preset), (1, self.choose_backbone), (1, self.assess),
                (1, self.cancel_assessment), (2, self.predict), (1, self.explain), (2, self.correct),
                (1, self.new_project), (2, self.choose_pool), (4, self.label), (4, self.wait)]

    def run(self, steps: int) -> None:
        weights, actions = zip(*self.actions())
        for _ in range(steps):
            action = self.rng.choices(actions, weights)[0]
            started = time.monotonic()
            action()
            self.qtbot.wait(self.rng.choice((0, 1, 5, 20)))
            took = time.monotonic() - started
            assert took < ACTION_LIMIT_S, f"{action.__name__} took {took:.1f} s"
            self.done.append(action.__name__)

    # -- data ---------------------------------------------------------------------------------------
    def drop_images(self) -> None:
        drop(self.window.data_panel.drop_zone, [self.rng.choice(self.images)])

    def drop_texts(self) -> None:
        if self.texts:
            drop(self.window.data_panel.drop_zone, self.texts)

    def choose_pool(self) -> None:
        panel = self.window.data_panel
        if panel.pool_button.isEnabled():
            pool = self.rng.choice(self.pools)
            panel.ask_unlabelled_pool = lambda _modality: [str(pool)]
            panel.pool_button.click()

    def label(self) -> None:
        """Open the labelling window, or press a key in it (a class, Enter, Backspace, Ctrl+Z), or close it."""
        panel = self.window.data_panel
        dialog = panel.labelling_dialog
        if not dialog.isVisible():
            if panel.label_button.isEnabled():
                panel.label_button.click()
            return
        key, modifier = self.rng.choice([(Qt.Key.Key_1, Qt.KeyboardModifier.NoModifier),
                                         (Qt.Key.Key_2, Qt.KeyboardModifier.NoModifier),
                                         (Qt.Key.Key_Return, Qt.KeyboardModifier.NoModifier),
                                         (Qt.Key.Key_Return, Qt.KeyboardModifier.NoModifier),
                                         (Qt.Key.Key_Backspace, Qt.KeyboardModifier.NoModifier),
                                         (Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier), (None, None)])
        if key is None:
            dialog.hide()
        else:
            self.qtbot.keyClick(dialog.view.classes, key, modifier)

    def cancel_scan(self) -> None:
        self.window.data_panel.cancel_scan_requested.emit()

    def switch_step(self) -> None:
        self.window.tabs.setCurrentIndex(self.rng.randrange(self.window.tabs.count()))

    # -- model -----------------------------------------------------------------------------------------
    def choose_preset(self) -> None:
        panel = self.window.model_panel
        if self.window.state.model is not None and self.window.state.active_run is None:
            self.rng.choice((panel.train_head_only, panel.train_last_blocks))()

    def choose_backbone(self) -> None:
        state = self.window.state
        if state.engine is not None and state.active_run is None and state.modality.name == "image":
            state.choose_backbone(self.rng.choice([LITE0, state.engine.default_backbone]))

    def assess(self) -> None:
        self.window.model_panel.assessment.assess_requested.emit()

    def cancel_assessment(self) -> None:
        self.window.model_panel.assessment.cancel_requested.emit()

    # -- training --------------------------------------------------------------------------------------
    def start_training(self) -> None:
        window = self.window
        window.state.training_mode = "manual"
        if window.state.active_run is None:
            window.train_panel.settings.set_values(**TINY)
        window.start_action.trigger()

    def start_search(self) -> None:
        window = self.window
        if window.state.active_run is None:
            window.train_panel.settings.set_values(**TINY)
            window.state.training_mode, window.state.search_minutes = "automatic", 0.05
        window.train_panel.start_button.click()

    def pause_or_resume(self) -> None:
        self.window.train_panel.pause_button.click()

    def stop(self) -> None:
        self.window.train_panel.stop_button.click()

    def wait(self) -> None:
        self.qtbot.wait(self.rng.choice((50, 500, 2000)))     # time for a scan, a build or a run to end

    # -- results, try it, export ----------------------------------------------------------------------
    def select_result(self) -> None:
        panel = self.window.results_panel
        if panel.run is None or not panel.run.classes:
            return
        if self.rng.random() < 0.3:
            panel.show_most_confident_wrong()
            return
        self.window.tabs.setCurrentWidget(panel)            # a real click on a matrix cell
        n, table = len(panel.run.classes), panel.confusion.table
        index = panel.confusion.model.index(self.rng.randrange(n), self.rng.randrange(n))
        table.scrollTo(index)
        self.qtbot.mouseClick(table.viewport(), Qt.MouseButton.LeftButton, pos=table.visualRect(index).center())

    def select_run(self) -> None:
        table = self.window.results_panel.compare.table
        if table.rowCount():
            table.selectRow(self.rng.randrange(table.rowCount()))

    def correct(self) -> None:
        gallery = self.window.results_panel.gallery
        paths = gallery.paths()
        if paths:
            gallery.select_path(self.rng.choice(paths))
            self.rng.choice((gallery.exclude_selected, gallery.restore_selected))()

    def explain(self) -> None:
        panel = self.window.results_panel
        if panel.run is not None and panel.run.checkpoint is not None and not panel.run.shows_texts:
            paths = [item.path for item in panel.run.cell_items(0, 0)]
            if paths:
                panel.explain(paths[0], 0)

    def predict(self) -> None:
        panel = self.window.predict_panel
        if panel.text_model:
            panel.predict_texts(["a lovely day", "a rainy night"])
        else:
            panel.predict([str(self.rng.choice(self.images) / "red")])

    def export(self) -> None:
        dialogs = [d for d in self.window.findChildren(ExportDialog) if shiboken6.isValid(d) and d.isVisible()]
        if dialogs and dialogs[-1].task is None:
            dialogs[-1].close()
            return
        dialog = self.window.show_export_dialog()
        if dialog is not None:
            dialog.path.setText(str(self.tmp / "exports" / f"model-{len(self.done)}"))
            if not dialog.text:
                dialog.format.setCurrentIndex(dialog.format.findData("safetensors"))
            dialog.start_export()

    # -- projects ---------------------------------------------------------------------------------------
    def save_project(self) -> None:
        saved = self.window.projects.save_as()
        if saved:
            self.projects.append(saved)

    def open_project(self) -> None:
        if self.projects:
            self.window.projects.open(self.rng.choice(self.projects))

    def new_project(self) -> None:
        if self.window.state.active_run is None:
            self.window.projects.new_project()


def live_thread_count() -> int:
    """threading.active_count(), less the records Python keeps of foreign threads (QThreads that ran Python)
    after they ended: on Linux a thread is live while /proc lists it."""
    def live(thread: threading.Thread) -> bool:
        if not isinstance(thread, threading._DummyThread):
            return thread.is_alive()
        return not Path("/proc/self/task").is_dir() or Path(f"/proc/self/task/{thread.native_id}").exists()
    return sum(map(live, threading.enumerate()))


def close_and_check(qtbot, window, threads_before: int) -> None:
    """Closing stops every task and joins its thread; nothing is left running."""
    slots = [window.scans.slot, window.models.slot, window.models.engine_slot, window.assessment.slot,
             window.training.slot, window.predict_panel.slot, window.results_panel.thumbnail_slot,
             window.results_panel.explain_slot, window.labelling.slot, window.labelling.pool_slot]
    for dialog in window.findChildren(ExportDialog):
        if shiboken6.isValid(dialog):
            dialog.cancel_export()
    qtbot.waitUntil(lambda: not any(shiboken6.isValid(d) and d.task for d in window.findChildren(ExportDialog)),
                    timeout=CLOSE_TIMEOUT_MS)
    started = time.monotonic()
    assert window.close(), "the window closes (the stop question is answered Yes)"
    assert time.monotonic() - started < CLOSE_TIMEOUT_MS / 1000
    assert not window.tasks.running, "every task has ended"
    assert not any(slot.running for slot in slots)
    qtbot.waitUntil(lambda: live_thread_count() <= threads_before, timeout=30_000)


def soak(qtbot, windows, tmp_path, monkeypatch, seed: int, steps: int, texts: bool = True) -> list[str]:
    monkeypatch.setattr(QMessageBox, "question", lambda *args, **kwargs: QMessageBox.StandardButton.Yes)
    threads_before = live_thread_count()
    window = windows(tmp_path / "settings.ini")
    actions = Soak(qtbot, window, tmp_path, random.Random(seed), texts)
    actions.run(steps)
    runs = [record.status for record in window.state.runs]
    close_and_check(qtbot, window, threads_before)
    print(f"soak {seed}: {steps} actions, runs {runs}")
    return actions.done, runs


@pytest.mark.timeout(300)
@pytest.mark.parametrize("seed", [20240601])
def test_a_random_soak_of_the_window_leaves_nothing_running(qtbot, windows, tmp_path, monkeypatch, seed):
    done, runs = soak(qtbot, windows, tmp_path, monkeypatch, seed, steps=200, texts=False)
    assert len(done) == 200 and {"start_training", "drop_images", "export", "save_project", "label"} <= set(done)
    assert runs, "some run was started and recorded"


@pytest.mark.slow
@pytest.mark.timeout(3600)
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_long_random_soak_of_the_window(qtbot, windows, tmp_path, monkeypatch, seed):
    done, runs = soak(qtbot, windows, tmp_path, monkeypatch, seed, steps=2000)
    assert len(done) == 2000 and runs
