"""Project files: the application state's serialisation, and File → New, Open, Save, Recent and autosave.

`engine.project.Project` is the file format. Saving serialises the state (`project_from_state`);
opening loads a Project into it (`load_into_state`), and the window reacts as it does to a user's
choices: it scans the dataset and builds the backbone for its classes, and the built model takes the
saved freeze state. The training settings saved and restored are the form's FIELDS (`gui.train_fields`),
so a setting added to the form round-trips with no change here.

Every question the controller asks goes through a replaceable attribute (`ask_open_path`,
`ask_save_path`, `ask_dataset_location`), and every message box is opened non-modally, so tests drive
it without blocking dialogs.
"""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtCore import QObject, QSettings, Signal
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import QFileDialog, QMenu, QMessageBox, QWidget

from engine.core.files import write_json
from engine.core.paths import user_data_dir
from engine.core import modality as modalities
from engine.project import PROJECT_SUFFIX, Project, ProjectError, load_project
from gui.train_fields import FIELDS

if TYPE_CHECKING:
    from gui.state import AppState

RECENT_KEY = "project/recent"
MAX_RECENT = 8
FILE_FILTER = f"TransferLab projects (*{PROJECT_SUFFIX})"


def autosave_path() -> Path:
    """Where an unsaved project is autosaved (a saved one is autosaved to its own file)."""
    return user_data_dir() / f"autosave{PROJECT_SUFFIX}"


# -- the state as a project file ----------------------------------------------------------------------
def project_from_state(state: AppState) -> Project:
    """What a project file keeps of the state: where the dataset is (not its scan), the corrections,
    the backbone with its weights and freeze state, the settings as a TrainConfig dict, the training mode
    (manual or automatic, with the search's minutes), and the runs."""
    config = state.training_config().to_dict()
    config.pop("frozen_parameters")                # stored once, as the project's frozen_parameters
    project = Project(dataset_sources=list(state.dataset_sources), corrections=dict(state.corrections),
                      frozen_parameters=state.frozen_parameters, config=config, runs=list(state.runs),
                      training_mode=state.training_mode, search_minutes=state.search_minutes,
                      text_columns=dict(state.text_columns) if state.text_columns else None,
                      unlabelled_sources=list(state.unlabelled_sources), additions=dict(state.additions),
                      path=state.project_path)
    if state.backbone is not None:                 # chosen once the engine has loaded
        project.backbone = state.backbone
    return project


def load_into_state(project: Project, state: AppState) -> list[str]:
    """Make the state the project's (the engine must have loaded: backbones are checked against it).
    Returns lines for the log about what this machine cannot use."""
    notes = []
    state.report = None                            # the dataset is scanned afresh from its sources
    state.text_columns = dict(project.text_columns) if project.text_columns else None
    state.dataset_sources = list(project.dataset_sources)
    state.corrections.clear()
    state.corrections.update(project.corrections)
    state.additions.clear()
    state.additions.update(project.additions)
    state.unlabelled_sources = list(project.unlabelled_sources)
    for key, _label in FIELDS:
        if key in project.config:
            state.settings[key] = project.config[key]
    state.training_mode, state.search_minutes = project.training_mode, project.search_minutes
    if (state.engine is not None and state.backbone_row(project.backbone) is None
            and modalities.for_backbone(project.backbone).takes_model_folders):
        state.add_text_encoder(project.backbone)             # a user's Hugging Face folder, still on disk
    row = state.backbone_row(project.backbone)
    if row is None:
        notes.append(f"The project's backbone {project.backbone} is not available here; keeping {state.backbone}")
    else:
        state.choose_backbone(project.backbone)
        weights = project.config.get("weights")
        if weights_usable(weights, row):
            state.weights = weights
        if project.frozen_parameters is not None:
            state.frozen_parameters = list(project.frozen_parameters)
    state.runs[:] = project.runs
    state.project_path = project.path
    return notes


def weights_usable(weights: str | None, row: dict) -> bool:
    """Saved weights this machine has: ImageNet weights on disk, random ones, or a file still there."""
    if weights == "pretrained":
        return row["weights_available"]
    return weights == "random" or bool(weights) and Path(weights).is_file()


# -- the File menu ---------------------------------------------------------------------------------------
class ProjectController(QObject):
    """Keeps the state on disk: New, Open, Save, Save As, Recent projects, and autosave whenever a
    run or a correction is recorded. It knows the state, the settings file and a parent for dialogs."""

    opened = Signal(str)               # path, once its dataset is scanned and its model built
    open_failed = Signal(str)          # the message shown to the user
    saved = Signal(str)                # path
    autosaved = Signal(str)            # path
    logged = Signal(str)               # a line for the Log

    def __init__(self, state: AppState, settings: QSettings, parent: QWidget):
        super().__init__(parent)
        self.state = state
        self.settings = settings
        self.ask_open_path = self._ask_open_path
        self.ask_save_path = self._ask_save_path
        self.ask_dataset_location = self._ask_dataset_location
        self.message_box: QMessageBox | None = None      # the last message shown (tests read it)
        self._before_engine: Project | None = None        # opened before the engine loaded
        self._opening: str | None = None                  # path until the opened state has settled
        self._autosave_paused = False
        self._make_actions()
        for signal in (state.runs.events.inserted, state.runs.events.changed, state.runs.events.removed,
                       state.corrections.events.added, state.corrections.events.changed,
                       state.corrections.events.removed, state.additions.events.added,
                       state.additions.events.changed, state.additions.events.removed):
            signal.connect(self._on_work_recorded)
        state.events.engine.connect(self._load_opened_before_engine)
        state.events.scanning.connect(self._announce_when_settled)
        state.events.model.connect(self._announce_when_settled)

    # -- menu ----------------------------------------------------------------------------------
    def _make_actions(self) -> None:
        def action(text, slot, shortcut=None):
            act = QAction(text, self.parent())
            if shortcut is not None:
                act.setShortcut(QKeySequence(shortcut))
            act.triggered.connect(slot)
            return act
        self.new_action = action("&New project", self.new_project, QKeySequence.StandardKey.New)
        self.open_action = action("Open &project…", self.open_dialog, "Ctrl+Shift+P")
        self.save_action = action("&Save project", self.save, QKeySequence.StandardKey.Save)
        self.save_as_action = action("Save project &as…", self.save_as, QKeySequence.StandardKey.SaveAs)
        self.recent_menu = QMenu("&Recent projects", self.parent())
        self.recent_menu.aboutToShow.connect(self._fill_recent_menu)

    def add_to_menu(self, menu: QMenu) -> None:
        for act in (self.new_action, self.open_action):
            menu.addAction(act)
        menu.addMenu(self.recent_menu)
        for act in (self.save_action, self.save_as_action):
            menu.addAction(act)
        self._fill_recent_menu()

    def recent_projects(self) -> list[str]:
        return [str(p) for p in self.settings.value(RECENT_KEY, [], type=list)]

    def _remember(self, path: str) -> None:
        recent = [path] + [p for p in self.recent_projects() if p != path]
        self.settings.setValue(RECENT_KEY, recent[:MAX_RECENT])
        self._fill_recent_menu()

    def _fill_recent_menu(self) -> None:
        menu = self.recent_menu
        menu.clear()
        for path in self.recent_projects():
            act = menu.addAction(Path(path).name)
            act.setStatusTip(path)
            act.setToolTip(path)
            act.setData(path)
            act.setEnabled(Path(path).is_file())
            act.triggered.connect(self._open_recent)
        if autosave_path().is_file():
            if not menu.isEmpty():
                menu.addSeparator()
            act = menu.addAction("Last autosave (unsaved project)")
            act.setData(str(autosave_path()))
            act.triggered.connect(self._open_recent)
        if menu.isEmpty():
            menu.addAction("No recent projects").setEnabled(False)
        else:
            menu.addSeparator()
            menu.addAction("Clear the list").triggered.connect(self.clear_recent)

    def _open_recent(self) -> None:
        self.open(self.sender().data())

    def clear_recent(self) -> None:
        self.settings.setValue(RECENT_KEY, [])
        self._fill_recent_menu()

    # -- questions and messages (replaceable in tests) -----------------------------------------
    def _start_folder(self) -> str:
        recent = self.recent_projects()
        return str(Path(recent[0]).parent) if recent else str(Path.home())

    def _ask_open_path(self) -> str | None:
        path, _ = QFileDialog.getOpenFileName(self.parent(), "Open a project", self._start_folder(),
                                              f"{FILE_FILTER};;All files (*)")
        return path or None

    def _ask_save_path(self) -> str | None:
        path, _ = QFileDialog.getSaveFileName(self.parent(), "Save the project", self._start_folder(), FILE_FILTER)
        return path or None

    def _ask_dataset_location(self, old: str) -> str | None:
        """Ask where a moved dataset is now: a folder, or the moved .zip/.csv file."""
        title = f"The dataset {Path(old).name!r} is no longer at {old}. Where is it now?"
        start = str(next((p for p in Path(old).parents if p.exists()), Path.home()))
        if Path(old).suffix.lower() in (".zip", ".csv"):
            path, _ = QFileDialog.getOpenFileName(self.parent(), title, start, "Datasets (*.zip *.csv)")
            return path or None
        return QFileDialog.getExistingDirectory(self.parent(), title, start) or None

    def _show(self, icon: QMessageBox.Icon, title: str, text: str) -> None:
        self.logged.emit(f"{title}: {text}")
        self.message_box = QMessageBox(icon, title, text, parent=self.parent())
        self.message_box.open()

    # -- new, save, autosave ----------------------------------------------------------------------
    def new_project(self) -> None:
        """A new, unsaved project that keeps what the window shows (no runs, no corrections)."""
        self._before_engine = self._opening = None
        with self._not_autosaving():
            self.state.runs.clear()
            self.state.corrections.clear()
            self.state.additions.clear()
        self.state.unlabelled_sources = []
        self.state.project_path = None

    def save(self) -> str | None:
        if self.state.project_path is None:
            return self.save_as()
        return self._save_to(self.state.project_path)

    def save_as(self) -> str | None:
        path = self.ask_save_path()
        return self._save_to(path) if path else None

    def _save_to(self, path: str) -> str | None:
        try:
            saved = project_from_state(self.state).save(path)
        except (OSError, ProjectError) as exc:
            self._show(QMessageBox.Icon.Critical, "The project was not saved", str(exc))
            return None
        self.state.project_path = saved
        self._remember(saved)
        self.saved.emit(saved)
        return saved

    def autosave(self) -> str | None:
        """Write the project where it lives (or to the autosave file when unsaved); cheap JSON."""
        target = Path(self.state.project_path) if self.state.project_path else autosave_path()
        try:
            write_json(target, project_from_state(self.state).to_dict())
        except OSError as exc:           # a full disk must not interrupt training: say it in the log
            self.logged.emit(f"Autosave to {target} failed: {exc}")
            return None
        self.autosaved.emit(str(target))
        return str(target)

    def _on_work_recorded(self) -> None:
        """A run's progress or a correction is on disk at once: a crash loses at most the epoch under
        way (its checkpoint is already in its folder)."""
        if not self._autosave_paused:
            self.autosave()

    @contextlib.contextmanager
    def _not_autosaving(self):
        self._autosave_paused = True
        try:
            yield
        finally:
            self._autosave_paused = False

    # -- open --------------------------------------------------------------------------------------
    def open_dialog(self) -> None:
        path = self.ask_open_path()
        if path:
            self.open(path)

    def open(self, path: str) -> bool:
        """Open a project; returns False when it was refused. `opened` follows once it has settled."""
        if self.state.active_run is not None:
            self._show(QMessageBox.Icon.Information, "Training is running",
                       "Stop the training run before opening another project.")
            return False
        try:
            loaded = load_project(path)
        except (ProjectError, OSError) as exc:   # OSError: a folder, no permission, a failing disk
            message = str(exc) if isinstance(exc, ProjectError) else \
                f"{Path(path).name} cannot be read: {exc.strerror or exc}"
            self._show(QMessageBox.Icon.Warning, "This project cannot be opened",
                       f"{message}\n\nThe file was left as it is.")
            self.open_failed.emit(message)
            return False
        unplaced = self._locate_sources(loaded)
        if Path(path) == autosave_path():
            loaded.path = None             # recovered work: Save asks where to keep it
        else:
            self._remember(loaded.path)
        for record in loaded.runs:
            if record.status == "running":   # the app stopped while it trained
                record.status = "interrupted"
        self.logged.emit(f"Opened project {path}")
        if unplaced:
            self._show(QMessageBox.Icon.Warning, "Dataset not found",
                       "The project was opened without its dataset, which is no longer at:\n"
                       + "\n".join(unplaced) + "\n\nOpen the dataset again to go on training.")
        self._opening = str(path)
        if self.state.engine is None:
            self._before_engine = loaded
        else:
            self._load(loaded)
        return True

    def _locate_sources(self, project: Project) -> list[str]:
        """Ask for each moved dataset location and relocate the project; returns those still missing."""
        unplaced = []
        for old in project.missing_sources():
            new = self.ask_dataset_location(old)
            if new and Path(new).exists():
                project.relocate(old, new)
                self.logged.emit(f"Dataset moved: {old} → {new}")
            else:
                unplaced.append(old)
        return unplaced

    def _load_opened_before_engine(self) -> None:
        if self._before_engine is not None:
            self._load(self._before_engine)

    def _load(self, project: Project) -> None:
        self._before_engine = None
        with self._not_autosaving():
            notes = load_into_state(project, self.state)
        for note in notes:
            self.logged.emit(note)
        self._announce_when_settled()

    def _announce_when_settled(self) -> None:
        """`opened` once the dataset is scanned and the model is built for it (and so frozen as saved)."""
        state = self.state
        if self._opening is None or self._before_engine is not None or state.scanning or not state.model_is_current():
            return
        path, self._opening = self._opening, None
        self.opened.emit(path)
