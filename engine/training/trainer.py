"""Fine-tuning: from a dataset report and a config to a run folder with its checkpoint and metrics.

The loop is plain PyTorch. It reports through `Callback` hooks carrying plain values, checks
`RunControl` between batches (pause/cancel), and writes the checkpoint atomically after every epoch (or,
with checkpoint 'best', whenever validation improves), so stopping at any moment never loses it. After
every epoch, every few minutes within one and at a cancel it also keeps the last training state, from
which `resume=True` continues the fit to exactly the end it would have reached (engine.training.runstate,
engine.training.snapshot).

The loop is the same for every dataset and every launch: what it trains on comes from a
`TrainingInputs` (engine.training.inputs: images, texts), how the work is spread over processes from a
strategy (engine.training.strategy: one process, or one of several torchrun started).
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from engine.core.callbacks import Callback, CallbackList
from engine.core.control import Cancelled, RunControl
from engine.core.device import (BatchSizeBackoff, amp_policy, device_label, grad_scaler, prepare_backends,
                                release_device_memory, resolve_device, short_name, to_device)
from engine.core.errors import readable_error
from engine.core.files import write_json
from engine.core.runfolder import RunFolder
from engine.core.runtime import tune_malloc
from engine.data.report import DatasetReport
from engine.models.catalog import ModelBundle
from engine.models.checkpoint import add_trust, save_checkpoint, split_trust_state
from engine.models.heads import set_head
from engine.models.layers import LayerTree, frozen_batchnorm_to_eval
from engine.models.trust import KNN_BANK
from engine.training.caches import FeatureDataset, HeadOnFeatures
from engine.training.calibration import fit_trust, scored_pass, scores_of, trust_summary
from engine.training.callbacks import BestCheckpoint, EarlyStopping
from engine.training.config import TrainConfig
from engine.training.inputs import TrainingInputs, inputs_for
from engine.training.metrics import classification_metrics, predict_logits
from engine.training.optim import class_weights, make_optimizer, make_schedule, param_groups, seed_everything
from engine.training.runstate import (STATE_EVERY_S, ResumeRefused, SavedState, active_run, check_resume,
                                      clear_state, data_path, dataset_identity, load_state, read_run_start,
                                      remove_stale_state_files, running_status, save_state, write_run_start,
                                      write_status)
from engine.training.snapshot import (EpochProgress, RandomStreams, StateMismatch, model_tensors,
                                      optimizer_state, restore_model, restore_optimizer, schedule_state,
                                      skippable, weights_digest)
from engine.training.strategy import SingleProcess

log = logging.getLogger("transferlab")


@dataclass
class Stage:
    """A phase of training with one freeze state, learning rate and number of epochs."""

    name: str
    epochs: int
    lr: float
    frozen: list[str] | None = None      # parameter names; None means "use the preset below"
    preset: str = "head"
    blocks: int = 2


@dataclass
class FitResult:
    status: str                     # 'completed' | 'cancelled' | 'stopped-early'
    run_dir: str
    checkpoint: str | None
    metrics: dict = field(default_factory=dict)
    history: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def plan_stages(config: TrainConfig) -> list[Stage]:
    if config.optimizer == "lbfgs":          # the head is solved, not trained: one pass, one history entry
        return [Stage("train", 1, config.lr, config.frozen_parameters, config.freeze, config.freeze_blocks)]
    if config.recipe == "single":
        return [Stage("train", config.epochs, config.lr, config.frozen_parameters, config.freeze,
                      config.freeze_blocks)]
    # Stage 2 trains what the user chose (an explicit tree state wins); "head" would repeat stage 1.
    second = "none" if config.freeze == "head" else config.freeze
    return [Stage("head", config.head_epochs, config.lr, None, "head"),
            Stage("fine-tune", config.epochs - config.head_epochs, config.lr * config.stage2_lr_factor,
                  config.frozen_parameters, second, config.freeze_blocks)]


def apply_stage_freeze(tree: LayerTree, stage: Stage) -> None:
    if stage.frozen is not None:
        tree.freeze_parameters(stage.frozen)
    else:
        tree.apply_preset(stage.preset, stage.blocks)


class Trainer:
    """Runs one fit. Construct, then call `fit()`; safe to run on a worker thread.

    `resume=True` continues the fit `run_dir` holds from its last state (engine.training.runstate) and ends
    as that fit would have; it raises ResumeRefused here, before any work, when it cannot.
    `state_every_s`: seconds between training states within an epoch (default STATE_EVERY_S).
    `inputs`: what the fit trains on (default: `inputs_for(report)`, the dataset's modality);
    `strategy`: how the work is spread over processes (default: `SingleProcess`).
    """

    def __init__(self, report: DatasetReport, config: TrainConfig, run_dir: str | Path,
                 callbacks: list[Callback] | None = None, control: RunControl | None = None,
                 bundle: ModelBundle | None = None, evaluate_test: bool = True, resume: bool = False,
                 state_every_s: float | None = None, strategy: SingleProcess | None = None,
                 inputs: TrainingInputs | None = None):
        self.strategy = strategy or SingleProcess()
        self.inputs = inputs or inputs_for(report)
        config = self.inputs.configure(config)
        refusal = self.strategy.refusal(config)
        if refusal:
            raise ValueError(refusal)
        config.validate()
        # a device that is not there: refused before any work
        self.device = self.strategy.device(resolve_device(config.device))
        if resume:
            check_resume(run_dir, report, config)
        self.report = report
        self.config = config
        self.run_dir = self.strategy.folder(Path(run_dir))
        self.checkpointer = BestCheckpoint(self._save_checkpoint, keep_last=config.checkpoint == "last")
        self.early_stopping = EarlyStopping(config.early_stopping)
        # the trainer's own callbacks first: they set logs["best"] before anyone else sees an epoch
        self.callbacks = CallbackList([self.checkpointer, self.early_stopping, *self.strategy.callbacks(self),
                                       *(callbacks or [])])
        self.control = control or RunControl()
        self.bundle = bundle
        self.evaluate_test = evaluate_test  # a recipe search's candidates never see the test split
        self.history: list[dict] = []
        self.files = RunFolder(self.run_dir)
        self._epoch = 0                                  # epochs begun (the one in progress included)
        self._step = 0                                   # batches done, all epochs
        self.resume = resume
        self.state_every_s = STATE_EVERY_S if state_every_s is None else state_every_s
        if not self.strategy.saves_within_epoch:
            self.state_every_s = math.inf
        self._stages: list[Stage] = []
        self._stage_index = 0
        self._epoch_in_stage = 0                         # epochs done in the current stage
        self._trained: set[str] = set()                  # parameters that trained in some stage so far
        self._progress: EpochProgress | None = None      # the epoch in progress
        self._resume_point: SavedState | None = None     # the state to continue from, until it is in place
        self._resumed_from = 0
        self._status: dict | None = None                 # status.json, once this fit has written it
        self._cache_identity: dict | None = None
        self._last_state_time = 0.0
        self._saved_at: tuple[int, int] | None = None   # (step, batches) of the last state written
        self._optimizer = self._schedule = self._sampler = None   # of the stage that trains now
        self.path_notes: list[str] = []                  # where inputs come from, or why not cached
        self.inputs.bind(self)

    # -- set-up ---------------------------------------------------------------------------------
    def _prepare(self) -> None:
        tune_malloc()      # in case the app did not call engine.core.runtime.tune_process() at start-up
        self.generator = seed_everything(self.config.seed)
        classes = self.report.classes
        if self.bundle is None:
            self.bundle = self.inputs.create_bundle(self.config, len(classes))
        set_head(self.bundle.model, self.config.head)     # a bundle passed in trains the configured head
        # channels_last: 1.4x inference and 1.7x training for EfficientNet-Lite0 on CPU, never slower
        # for the other backbones (bench/bench_settings.py, bench/RESULTS.md)
        self.model = self.bundle.model.to(memory_format=torch.channels_last)
        self._use_device()
        self.tree = LayerTree(self.model)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.train_samples = self.report.split("train")
        self.val_samples = self.report.split("val") or self.train_samples
        self.test_samples = self.report.split("test")
        labels = [s.label for s in self.train_samples]
        weights = class_weights(labels, len(classes)) if self.config.balance == "loss" else None
        weights = to_device(weights, self.device)
        self.criterion = nn.CrossEntropyLoss(weight=weights, label_smoothing=self.config.label_smoothing)
        self.eval_criterion = nn.CrossEntropyLoss()

    def _use_device(self) -> None:
        """The model on the fit's device, with its mixed-precision policy; nothing changes on a CPU."""
        prepare_backends(self.device)
        if self.device.type != "cpu":
            self.model = self.model.to(self.device)
            log.info("training on %s", device_label(self.device))
        self.amp = amp_policy(self.device)
        self.scaler = grad_scaler(self.amp, self.device)
        self._micro_batch = self.config.batch_size    # halved after running out of GPU memory

    # -- the loop -------------------------------------------------------------------------------
    def fit(self) -> FitResult:
        try:
            with active_run(self.run_dir):
                return self._fit()
        except Exception as exc:
            self._mark_failed()
            self.callbacks.on_error(readable_error(exc))
            raise

    def _fit(self) -> FitResult:
        self._prepare()
        stages = self._stages = plan_stages(self.config)
        self._begin_run(stages)
        status = "completed"
        started = False
        try:
            for index in range(self._stage_index, len(stages)):
                stage, self._stage_index = stages[index], index
                apply_stage_freeze(self.tree, stage)
                self._trained |= {n for n, p in self.model.named_parameters() if p.requires_grad}
                net, train_loader, val_loader, path = self.inputs.pipeline()
                net, train_loader = self.strategy.distribute(net, train_loader, self.config.seed, self.path_notes)
                self._sampler = skippable(train_loader)
                self._same_path_as_saved(path)
                if not started:
                    self._announce(stages, len(train_loader), path)
                    started = True
                if self._run_stage(stage, net, train_loader, val_loader) == "stopped-early":
                    status = "stopped-early"
                    break
        except Cancelled:
            status = "cancelled"
            self._keep_cancelled_position()
        metrics = {}
        if status != "cancelled" and self.files.has_checkpoint():
            metrics = self.strategy.alone(self._final_metrics)
        self.inputs.release()
        result = FitResult(status, str(self.run_dir),
                           str(self.files.checkpoint) if self.files.has_checkpoint() else None,
                           metrics, self.history)
        write_json(self.files.history, self.history)
        self._write_status(status)
        if status != "cancelled":
            clear_state(self.files)          # a finished fit cannot resume: its state is only disk space
        self.callbacks.on_fit_end({"status": status, "run_dir": str(self.run_dir),
                                   "checkpoint": result.checkpoint,
                                   "val_accuracy": metrics.get("val_accuracy"),
                                   "test_accuracy": metrics.get("test_accuracy")})
        return result

    def _announce(self, stages: list[Stage], steps_per_epoch: int, path: str) -> None:
        write_json(self.files.config, {**self.config.to_dict(), "frozen_pass": self.inputs.frozen_pass(path),
                                       "device_used": str(self.device)})
        total, trainable = self.tree.counts()
        self.callbacks.on_fit_start({
            "epochs": sum(s.epochs for s in stages), "steps_per_epoch": steps_per_epoch,
            "modality": self.report.modality, "n_train": len(self.train_samples), "n_val": len(self.val_samples),
            "n_test": len(self.test_samples), "classes": list(self.report.classes), "path": path,
            "params_total": total, "params_trainable": trainable, "backbone": self.bundle.spec.name,
            "stages": [s.name for s in stages], "path_note": "; ".join(self.path_notes),
            **self.inputs.fit_start(path),
            "resumed_from_epoch": self._resumed_from, "history": [dict(logs) for logs in self.history],
            "device": str(self.device), "device_label": device_label(self.device)})

    def _run_stage(self, stage: Stage, net: nn.Module, train_loader, val_loader) -> str:
        if self.config.optimizer == "lbfgs":
            return self._solve_head(stage, net, train_loader, val_loader)
        # groups come from the whole model, so a net on cached inputs gets the same per-block rates
        groups = param_groups(self.model, stage.lr, self.config.layer_decay, self.config.weight_decay)
        if not groups:
            raise ValueError("every layer is frozen: choose at least one layer to train")
        optimizer = make_optimizer(groups, self.config)
        schedule = make_schedule(optimizer, self.config, len(train_loader), stage.epochs)
        first, progress = self._resume_stage(optimizer, schedule)
        self._epoch_in_stage = first
        if self.early_stopping.should_stop:          # a resumed fit that had stopped early
            return "stopped-early"
        for epoch_in_stage in range(first, stage.epochs):
            self._epoch += 1
            started = time.monotonic()
            progress = progress or EpochProgress(self.generator.get_state())
            loss, acc = self._train_epoch(net, train_loader, optimizer, schedule, stage, progress)
            val_loss, val_acc = self._validate(net, val_loader)
            logs = {"epoch": self._epoch, "loss": loss, "accuracy": acc, "val_loss": val_loss,
                    "val_accuracy": val_acc, "lr": optimizer.param_groups[0]["lr"],
                    "epoch_time_s": time.monotonic() - started, "stage": stage.name}
            self.callbacks.on_epoch_end(self._epoch, logs)       # BestCheckpoint adds logs["best"]
            self.history.append(logs)
            self._epoch_in_stage, self._progress, progress = epoch_in_stage + 1, None, None
            self._save_state(optimizer, schedule)
            if self.early_stopping.should_stop:
                return "stopped-early"
        return "completed"

    def _solve_head(self, stage: Stage, net: nn.Module, train_loader, val_loader) -> str:
        """optimizer 'lbfgs': the linear head solved on the cached training features, its L2 strength chosen
        by grouped cross-validation (engine.training.logistic); one entry in the history."""
        dataset = train_loader.dataset
        if not (isinstance(net, HeadOnFeatures) and isinstance(dataset, FeatureDataset)
                and isinstance(net.classifier, nn.Linear)):
            raise ValueError("optimizer lbfgs solves a linear head on cached features: train the head only "
                             "(freeze head, linear head) with the cache on")
        from engine.training.logistic import fit_head
        started = time.monotonic()
        rows = dataset.rows if dataset.rows is not None else slice(None)
        views, labels = torch.stack([view[rows] for view in dataset.views]).cpu(), dataset.labels[rows]
        weight = class_weights(labels.tolist(), len(self.report.classes)) if self.config.balance != "none" else None
        fitted = fit_head(views, labels.numpy(), len(self.report.classes), weight, tta=self.config.tta == "flip",
                          seed=self.config.seed, control=self.control)
        with torch.no_grad():
            net.classifier.weight.copy_(fitted.weight)
            net.classifier.bias.copy_(fitted.bias)
            logits = views[0] @ fitted.weight.T + fitted.bias         # the training images, plain view
        loss, accuracy = float(self.eval_criterion(logits, labels)), float((logits.argmax(1) == labels).float().mean())
        self.path_notes.append(fitted.describe())
        self._epoch += 1
        val_loss, val_accuracy = self._validate(net, val_loader)
        logs = {"epoch": self._epoch, "loss": loss, "accuracy": accuracy, "val_loss": val_loss,
                "val_accuracy": val_accuracy, "lr": 0.0, "epoch_time_s": time.monotonic() - started,
                "stage": stage.name, "l2": fitted.penalty, "cv_accuracy": fitted.cv_accuracy}
        self.callbacks.on_epoch_end(self._epoch, logs)
        self.history.append(logs)
        self._epoch_in_stage = 1
        return "completed"

    def _train_epoch(self, net, loader, optimizer, schedule, stage: Stage,
                     progress: EpochProgress) -> tuple[float, float]:
        """(loss, accuracy) of one epoch, over every process's share of it."""
        loss_sum, correct, seen = self.strategy.run_epoch(
            loader, self._epoch, lambda: self._train_batches(net, loader, optimizer, schedule, stage, progress))
        return loss_sum / max(seen, 1), correct / max(seen, 1)

    def _train_batches(self, net, loader, optimizer, schedule, stage: Stage, progress: EpochProgress) -> list[float]:
        """This process's batches of the epoch; [loss sum, correct, seen] of them."""
        if isinstance(loader.dataset, FeatureDataset):
            loader.dataset.view = (self._epoch - 1) % len(loader.dataset.views)
        net.train()
        if not self.config.train_frozen_bn:
            frozen_batchnorm_to_eval(net)
        self._progress, self._optimizer, self._schedule = progress, optimizer, schedule
        if progress.resumed:
            # the epoch's order again from the generator state it began with, without the batches done,
            # and every random stream as it was after the last of them
            self.generator.set_state(progress.loader_start)
            self._sampler.skip = progress.batches * loader.batch_size
            progress.streams.restore()
        started = time.monotonic()
        params = [p for g in optimizer.param_groups for p in g["params"]]
        for batch, (inputs, targets) in enumerate(loader, start=progress.batches + 1):
            self.control.checkpoint()
            inputs, targets = to_device(inputs, self.device), to_device(targets, self.device)
            outputs, loss = self._step_within_memory(net, inputs, targets, optimizer, params)
            schedule.step()
            self._step += 1
            progress.add(float(loss.detach()) * len(targets), int((outputs.argmax(1) == targets).sum()),
                         len(targets), RandomStreams.capture())
            rate = progress.seen / max(time.monotonic() - started, 1e-9)
            self.callbacks.on_batch_end(self._step, {
                "epoch": self._epoch, "batch": batch, "batches": len(loader), "loss": float(loss.detach()),
                "accuracy": progress.correct / progress.seen, "lr": optimizer.param_groups[0]["lr"],
                "images_per_s": rate, "eta_s": (len(loader.dataset) - progress.seen) / max(rate, 1e-9),
                "stage": stage.name})
            if time.monotonic() - self._last_state_time >= self.state_every_s:
                self._save_state(optimizer, schedule)
        return [progress.loss_sum, progress.correct, progress.seen]

    def _step_within_memory(self, net, inputs, targets, optimizer, params) -> tuple[torch.Tensor, torch.Tensor]:
        """One optimizer step on the batch. When the GPU runs out of memory the step is done again in
        micro-batches of half the size (gradients accumulated, so the loader, the schedule and a saved
        state stay as they are), down to 1; then OutOfMemory says so. The kept checkpoint is on disk."""
        backoff = BatchSizeBackoff(self._micro_batch)
        while True:
            try:
                return self._optimizer_step(net, inputs, targets, optimizer, params, backoff.batch_size)
            except torch.OutOfMemoryError:
                optimizer.zero_grad(set_to_none=True)
                self._micro_batch = backoff.next_after_oom(short_name(self.device))
                release_device_memory()
                self.path_notes.append(f"{short_name(self.device)} ran out of memory: steps run in "
                                       f"micro-batches of {self._micro_batch} images")

    def _optimizer_step(self, net, inputs, targets, optimizer, params, micro: int):
        """Forward, backward (in micro-batches of `micro` when the batch is larger) and the step, under the
        device's autocast and GradScaler. A batch within `micro` is exactly the plain step."""
        optimizer.zero_grad(set_to_none=True)
        if len(targets) <= micro:
            with self.amp.autocast(self.device):
                outputs = net(inputs)
                loss = self.criterion(outputs, targets)
            self._backward(loss)
        else:
            pieces, loss = [], 0.0
            for start in range(0, len(targets), micro):
                part = slice(start, start + micro)
                with self.amp.autocast(self.device):
                    out = net(inputs[part])
                    share = self.criterion(out, targets[part]) * (len(targets[part]) / len(targets))
                self._backward(share)
                pieces.append(out.detach())
                loss = loss + share.detach()
            outputs = torch.cat(pieces)
        if self.scaler is not None:
            self.scaler.unscale_(optimizer)
        if self.config.grad_clip > 0:
            nn.utils.clip_grad_norm_(params, self.config.grad_clip)
        if self.scaler is not None:
            self.scaler.step(optimizer)
            self.scaler.update()
        else:
            optimizer.step()
        return outputs, loss

    def _backward(self, loss: torch.Tensor) -> None:
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()

    # -- the training state: what a resumed fit continues from -----------------------------------------
    def _begin_run(self, stages: list[Stage]) -> None:
        """A fresh fit records how it starts (state/run.json); a resumed one checks it starts from the same
        weights and puts its last state back in place. Then the status says 'running'."""
        digest, data = weights_digest(self.model), data_path(self.report)
        if not self.resume:
            write_run_start(self.files, self.config, data, self.report, digest)
        else:
            if read_run_start(self.files)["weights_digest"] != digest:
                raise ResumeRefused("the model's starting weights differ from this run's (another weights "
                                    "file or version): resuming would mix them")
            remove_stale_state_files(self.files)
            saved = load_state(self.files)
            if saved is not None:
                self._restore(saved)
        self._resumed_from = self._epoch
        self._status = running_status(data, sum(s.epochs for s in stages))
        self._write_status("running")
        self._last_state_time = time.monotonic()

    def _restore(self, saved: SavedState) -> None:
        """The model, history, best and early-stopping state of `saved`; the optimizer, schedule and
        epoch in progress follow when its stage is set up (`_resume_stage`)."""
        meta, position = saved.meta, saved.position
        try:
            self._trained = restore_model(self.model, saved.tensors)
        except StateMismatch as exc:
            raise ResumeRefused(f"the saved training state does not fit this model: {exc}") from None
        self.history = [dict(logs) for logs in meta["history"]]
        self.checkpointer.restore(meta["best"])
        self.early_stopping.restore(meta["early_stopping"])
        self._epoch, self._step = position["epoch"], position["step"]
        self._stage_index, self._epoch_in_stage = position["stage"], position["epoch_in_stage"]
        self._resume_point = saved

    def _resume_stage(self, optimizer, schedule) -> tuple[int, EpochProgress | None]:
        """(epochs of this stage already done, the epoch in progress) from the state being resumed, whose
        optimizer and schedule go into the freshly built ones; (0, None) for a stage that starts now."""
        saved, self._resume_point = self._resume_point, None
        if saved is None:
            return 0, None
        meta = saved.meta
        if meta["optimizer"] is not None:
            try:
                restore_optimizer(optimizer, meta["optimizer"], saved.tensors, self._parameter_names())
            except StateMismatch as exc:
                raise ResumeRefused(f"the saved training state does not fit this recipe: {exc}") from None
            schedule.load_state_dict(meta["schedule"])
        return saved.position["epoch_in_stage"], EpochProgress.from_saved(saved.position, meta["rng"],
                                                                           saved.tensors)

    def _same_path_as_saved(self, path: str) -> None:
        """A resumed stage must train on what it trained on before (cached features of the same frozen
        layers, or images): memory or a changed backbone could choose otherwise, and change the run."""
        identity = {"path": path, "fingerprint": self.inputs.cache_fingerprint(path)}
        saved, self._cache_identity = self._resume_point, identity
        if saved is None or saved.meta.get("cache") is None or saved.position["stage"] != self._stage_index:
            return
        before = saved.meta["cache"]
        if before["path"] != path:
            raise ResumeRefused(f"this run trained on {before['path']}, now it would train on {path} "
                                f"({'; '.join(self.path_notes)}): resuming would change how it trains")
        if before["fingerprint"] != identity["fingerprint"]:
            raise ResumeRefused(f"the cached {path} differ from the ones this run trained on")

    def _save_state(self, optimizer, schedule) -> None:
        """Write the state to continue from: after every epoch, every `state_every_s` within one, and at a
        cancel. A stage whose epochs are all done is saved as the next stage's start (no optimizer: the
        next stage builds its own), unless it is the last or the fit stops early there. Process 0 alone."""
        if not self.strategy.is_main:
            return
        progress = self._progress
        stage, epoch_in_stage = self._stage_index, self._epoch_in_stage
        stage_over = progress is None and epoch_in_stage == self._stages[stage].epochs
        if stage_over and stage + 1 < len(self._stages) and not self.early_stopping.should_stop:
            stage, epoch_in_stage = stage + 1, 0
        keep_optimizer = stage == self._stage_index and not stage_over
        if progress is None:       # between epochs: the next one starts from the streams as they are now
            progress = EpochProgress(self.generator.get_state(), streams=RandomStreams.capture())
        position = {"stage": stage, "epoch_in_stage": epoch_in_stage, "epoch": self._epoch - (progress.batches > 0),
                    "step": self._step, **progress.to_json()}
        opt_json, opt_tensors = optimizer_state(optimizer, self._parameter_names()) if keep_optimizer else (None, {})
        meta = {"position": position, "optimizer": opt_json,
                "schedule": schedule_state(schedule) if keep_optimizer else None,
                "rng": progress.streams.to_json(), "best": self.checkpointer.state(),
                "early_stopping": self.early_stopping.state(), "history": self.history,
                "cache": self._cache_identity if stage == self._stage_index else None,
                "dataset": dataset_identity(self.report)}
        save_state(self.files, meta, {**model_tensors(self.model, self._trained), **opt_tensors,
                                      **progress.tensors()})
        self._last_state_time, self._saved_at = time.monotonic(), (self._step, progress.batches)
        self._write_status("running", durable=False)

    def _keep_cancelled_position(self) -> None:
        """A cancel inside an epoch keeps its batches: the state at the last batch done, unless written (or
        the position is one process's share of the epoch, which a resume could not continue)."""
        progress = self._progress
        if self.strategy.saves_within_epoch and progress is not None and progress.batches and self._saved_at != (self._step, progress.batches):
            self._save_state(self._optimizer, self._schedule)

    def _parameter_names(self) -> dict[int, str]:
        return {id(p): name for name, p in self.model.named_parameters()}

    def _write_status(self, status: str, durable: bool = True) -> None:
        if self._status is None or not self.strategy.is_main:
            return
        best = self.checkpointer.best
        self._status.update(status=status, epoch=len(self.history), best_val_accuracy=best[0] if best else None)
        write_status(self.files, self._status, durable)

    def _mark_failed(self) -> None:
        """status.json says 'failed' (keeping the fit resumable), unless the disk refuses that too."""
        try:
            self._write_status("failed")
        except OSError as exc:
            log.warning("could not mark %s as failed: %s", self.run_dir, exc)

    def _validate(self, net, loader) -> tuple[float, float]:
        return self.strategy.validate(net, lambda whole: self._val_loss_accuracy(whole, loader))

    def _val_loss_accuracy(self, net, loader) -> tuple[float, float]:
        logits, labels = predict_logits(self.inputs.evaluated(net), loader, self.control, amp=self.amp)
        if not len(labels):
            return float("nan"), float("nan")
        loss = float(self.eval_criterion(logits, labels))
        return loss, float((logits.argmax(1) == labels).float().mean())

    def _save_checkpoint(self, epoch: int, logs: dict) -> None:
        if not self.strategy.is_main:
            return
        save_checkpoint(self.files.checkpoint, self.model, self.bundle, self.report.classes,
                        {"epoch": epoch, "val_accuracy": logs["val_accuracy"], "val_loss": logs["val_loss"],
                         "config": self.config.to_dict()}, tta=self.config.tta)

    # -- after training ---------------------------------------------------------------------------
    def _final_metrics(self) -> dict:
        """Reload the checkpoint, evaluate it on val and test, fit its temperature and unknown score on
        what those passes computed (engine.training.calibration) and write metrics.json."""
        from safetensors.torch import load_file
        self.model.load_state_dict(split_trust_state(load_file(str(self.files.checkpoint)))[0])
        test = self.test_samples if self.evaluate_test else []
        splits = [(split, samples) for split, samples in (("val", self.val_samples), ("test", test)) if samples]
        reference = self.inputs.reference_samples(self.train_samples, KNN_BANK, self.config.seed) if splits else []
        total, evaluated = sum(len(samples) for _, samples in splits) + len(reference), 0
        passes = {}
        for split, samples in [*splits, ("train", reference)]:
            if not samples:
                continue
            net, loader = self.inputs.eval_inputs(samples)
            passes[split] = (*scored_pass(
                self.model, net, loader, self.control,
                lambda stage, done, _, before=evaluated: self.callbacks.on_progress(stage, before + done, total),
                amp=self.amp), evaluated_paths(samples, loader))
            evaluated += len(samples)
        trust_meta, scorer = self._fit_trust(passes)
        temperature = trust_meta["temperature"] if trust_meta else 1.0
        results, predictions, scores = {}, {}, {}
        for split, _ in splits:
            logits, labels, features, paths = passes[split]
            results[split] = classification_metrics(logits / temperature, labels, self.report.classes, paths)
            predictions[split] = results[split].pop("predictions")
            if scorer is not None:
                scores[split] = scores_of(scorer, logits, features, temperature)
                for row, score in zip(predictions[split], scores[split]):
                    row["ood_score"] = round(float(score), 6)
        metrics = summarize_metrics(self.report.classes, results, self.bundle.spec.name, self.bundle.weights,
                                    self.config.to_dict(), modality=self.report.modality)
        if trust_meta:
            metrics.update(trust_summary(trust_meta, {split: passes[split][:2] for split, _ in splits}, scores))
            add_trust(self.files.checkpoint, trust_meta, scorer)
        metrics["skipped_images"] = dict(self.inputs.unreadable)     # read at the scan, unreadable during the fit
        self.inputs.annotate_metrics(metrics, predictions)
        write_json(self.files.metrics, metrics)
        write_json(self.files.predictions, predictions)
        return metrics

    def _fit_trust(self, passes: dict) -> tuple[dict | None, nn.Module | None]:
        """The temperature and unknown score from the validation pass (none without a validation split)."""
        if "val" not in passes or len(passes["val"][1]) < 2:
            return None, None
        val_logits, val_labels, val_features, _ = passes["val"]
        train = passes.get("train")
        train_features, train_labels = (train[2], train[1]) if train else (None, torch.empty(0, dtype=torch.long))
        return fit_trust((train_features, train_labels), (val_logits, val_labels, val_features),
                         len(self.report.classes), seed=self.config.seed)


def evaluated_paths(samples, loader) -> list[str]:
    """The paths of the samples an evaluation pass really scored, in order: without the images its loader
    had to leave out (unreadable), so each prediction keeps its own file."""
    left_out = set(getattr(loader, "skipped_rows", ())) | set(getattr(loader.dataset, "skip", ()))
    return [s.path for row, s in enumerate(samples) if row not in left_out]


def summarize_metrics(classes: list[str], results: dict, backbone: str, weights: str | None, config: dict,
                      **described) -> dict:
    """metrics.json: headline numbers first; the test split's details when there is one, else val's.
    `described`: more of what the model is (an ensemble's members), after its backbone and weights."""
    main = results.get("test") or results.get("val") or {}
    return {
        "classes": list(classes),
        "backbone": backbone,
        "weights": weights,
        **described,
        "val_accuracy": results.get("val", {}).get("accuracy"),
        "test_accuracy": results.get("test", {}).get("accuracy"),
        "evaluated_on": "test" if "test" in results else "val",
        "per_class": main.get("per_class", []),
        "confusion_matrix": main.get("confusion_matrix", []),
        "most_confident_wrong": main.get("most_confident_wrong", []),
        "splits": results,
        "config": config,
    }


def train(report: DatasetReport, config: TrainConfig, run_dir: str | Path,
          callbacks: list[Callback] | None = None, control: RunControl | None = None) -> FitResult:
    """Convenience wrapper: one call from a scanned dataset to a finished run folder."""
    return Trainer(report, config, run_dir, callbacks, control).fit()
