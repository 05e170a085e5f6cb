"""Training events as plain-Python hooks (Keras/Lightning style): every argument is a float, int, str,
list or dict of those, so a GUI can forward them across threads without touching torch objects.

Hooks fire on every step; whoever shows them throttles (engine.core.progress.Throttle in the window, the
progress bars in the terminal)."""
from __future__ import annotations


class Callback:
    """Override the hooks you need; each default does nothing."""

    def on_fit_start(self, info: dict) -> None:
        """`info`: epochs, steps_per_epoch, n_train, n_val, n_test, classes, path ('features' | 'activations'
        | 'images'), path_note, augmented, images_decoded_once, params_total, params_trainable, stages,
        resumed_from_epoch (epochs done before this start: 0 for a fresh fit) and history (those epochs' logs,
        so live curves continue)."""

    def on_progress(self, stage: str, done: int, total: int) -> None:
        """Work outside training batches, as `engine.core.progress.Progress`: 'features' or 'activations'
        (the frozen part's single pass), 'images' (decoding once), 'evaluate' (val + test, one stage)."""

    def on_batch_end(self, step: int, logs: dict) -> None:
        """After every training batch. `logs`: epoch, batch, batches, loss, accuracy, lr, images_per_s,
        eta_s (left in this epoch), stage."""

    def on_epoch_end(self, epoch: int, logs: dict) -> None:
        """`logs`: loss, accuracy, val_loss, val_accuracy, lr, epoch_time_s, best (bool as 0/1), stage."""

    def on_fit_end(self, result: dict) -> None:
        """`result`: status ('completed'|'cancelled'|'stopped-early'), run_dir, checkpoint, metrics."""

    def on_error(self, message: str) -> None:
        """A one-line, human-readable reason the fit failed."""

    def on_candidate(self, entry: dict) -> None:
        """A recipe search scored (or skipped) a candidate: a leaderboard row (engine.search.auto.Candidate
        as a dict: name, kind, backbone, recipe, stage ('final' | 'screening' | 'assessment'), score, interval,
        scored_by, screening, comparison, seconds, status, note, val_accuracy, run_dir, chosen). A row whose
        name was seen before replaces it (a later score, its comparison with the default recipe, or
        chosen=True for the winner at the end)."""


class CallbackList(Callback):
    """Fans each event out to several callbacks."""

    def __init__(self, callbacks=()):
        self.callbacks = [c for c in callbacks if c is not None]

    def on_fit_start(self, info):
        for c in self.callbacks:
            c.on_fit_start(info)

    def on_progress(self, stage, done, total):
        for c in self.callbacks:
            c.on_progress(stage, done, total)

    def on_batch_end(self, step, logs):
        for c in self.callbacks:
            c.on_batch_end(step, logs)

    def on_epoch_end(self, epoch, logs):
        for c in self.callbacks:
            c.on_epoch_end(epoch, logs)

    def on_fit_end(self, result):
        for c in self.callbacks:
            c.on_fit_end(result)

    def on_error(self, message):
        for c in self.callbacks:
            c.on_error(message)

    def on_candidate(self, entry):
        for c in self.callbacks:
            c.on_candidate(entry)
