"""The trainer's own decisions as callbacks (Lightning's ModelCheckpoint and EarlyStopping): they run before
the user's callbacks on every epoch, so `logs["best"]` is set by the time a window or terminal sees it."""
from __future__ import annotations

from typing import Callable

from engine.core.callbacks import Callback


def improves(candidate: tuple[float, float], best: tuple[float, float], min_delta: float = 1e-4) -> bool:
    """Higher validation accuracy wins; at equal accuracy, a clearly lower validation loss."""
    (acc, loss), (best_acc, best_loss) = candidate, best
    return acc > best_acc or (acc == best_acc and loss < best_loss - min_delta)


class BestCheckpoint(Callback):
    """Saves the model whenever validation improves and marks that epoch's logs with best=1.

    `save(epoch, logs)` writes the checkpoint (atomically), so stopping at any moment keeps the best one.
    `keep_last`: save after every epoch instead (TrainConfig.checkpoint 'last', the default), so the
    validation split that reports the model's accuracy did not also pick its epoch; the best is still
    tracked for early stopping.
    """

    def __init__(self, save: Callable[[int, dict], None], keep_last: bool = False):
        self.save = save
        self.keep_last = keep_last
        self.best: tuple[float, float] | None = None      # (val_accuracy, val_loss)

    def on_epoch_end(self, epoch: int, logs: dict) -> None:
        candidate = (logs["val_accuracy"], logs["val_loss"])
        improved = self.best is None or improves(candidate, self.best)
        logs["best"] = int(improved)
        if improved:
            self.best = candidate
        if improved or self.keep_last:
            self.save(epoch, logs)

    def state(self) -> list[float] | None:
        """What a resumed fit needs to judge its next epochs as this one would: the best so far."""
        return list(self.best) if self.best is not None else None

    def restore(self, state: list[float] | None) -> None:
        self.best = tuple(state) if state is not None else None


class EarlyStopping(Callback):
    """Asks the fit to stop after `patience` epochs without a new best (0: never); counts per stage, as a
    two-stage recipe's second stage starts from a new freeze state."""

    def __init__(self, patience: int):
        self.patience = patience
        self.should_stop = False
        self._stale = 0
        self._stage: str | None = None

    def on_epoch_end(self, epoch: int, logs: dict) -> None:
        if logs.get("stage") != self._stage:
            self._stage, self._stale = logs.get("stage"), 0
        self._stale = 0 if logs.get("best") else self._stale + 1
        self.should_stop = bool(self.patience) and self._stale >= self.patience

    def state(self) -> dict:
        """Epochs without a new best in the current stage, and whether the fit was asked to stop."""
        return {"stale": self._stale, "stage": self._stage, "should_stop": self.should_stop}

    def restore(self, state: dict) -> None:
        self._stale, self._stage, self.should_stop = state["stale"], state["stage"], state["should_stop"]
