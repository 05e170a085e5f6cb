"""One controller per workflow of the window: each owns a `workers.TaskSlot`, reacts to the application
state and to its panel's intent signals, starts the engine job and writes the result back into the state.
The window only lays out the panels and wires the controllers' messages to its status bar and log."""
from gui.controllers.assess import AssessController
from gui.controllers.base import Controller
from gui.controllers.deep_check import DeepCheckController
from gui.controllers.labelling import LabellingController
from gui.controllers.model import ModelController
from gui.controllers.scan import ScanController
from gui.controllers.train import TrainController

__all__ = ["AssessController", "Controller", "DeepCheckController", "LabellingController", "ModelController",
           "ScanController", "TrainController"]
