"""Run nnU-Net v2's command-line tools for ``benchmarks/vs_nnunet.py``, inside the benchmark's own environment.

Usage::

    python benchmarks/_nnunet_launcher.py plan_and_preprocess|train|predict [nnU-Net's own arguments]

runs ``nnUNetv2_plan_and_preprocess`` / ``nnUNetv2_train`` / ``nnUNetv2_predict`` unchanged, with two additions that
live here and nowhere else (never in medtransfer itself):

* **No Primus import.**  nnU-Net finds a trainer by name by importing the modules under
  ``nnunetv2/training/nnUNetTrainer``; ``primus/primus_trainers.py`` imports timm, which imports torchvision, and
  torchvision does not import next to torch 2.13.0 on these machines (``operator torchvision::nms does not
  exist``).  An empty module stands in for it, so the Primus trainers cannot be chosen; nothing here uses them.
* **``nnUNetTrainer_TimeBudget``**: nnU-Net's default trainer (its network, loss, augmentation, poly learning rate,
  250 training and 50 validation iterations per epoch) trained for a wall-clock budget instead of 1000 epochs.
  The budget (seconds, environment variable ``MEDTRANSFER_NNUNET_SECONDS``) counts from the start of
  ``run_training`` (data loaders, unpacking, every epoch, the final checkpoint).  After 20 iterations the trainer
  measures its speed and plans the number of epochs that fit (the poly schedule then ends with the budget); after
  every epoch it plans again from the measured epoch time, and an epoch's training stops early when the rest of
  it (its validation included) would end past the budget.  When not even one epoch fits, the one epoch is
  shortened (training and validation iterations alike).  It skips nnU-Net's final validation: with fold ``all``
  that would predict the training cases; the benchmark scores its held-out test scans instead.  It writes
  ``time_budget.json`` (budget, seconds, epochs, iterations) into the fold folder.  It is registered in the module
  that nnU-Net's trainer discovery searches first, so ``-tr nnUNetTrainer_TimeBudget`` finds it.
"""

from __future__ import annotations

import json
import os
import sys
import time
import types

BUDGET_ENV = "MEDTRANSFER_NNUNET_SECONDS"
TRAINER_NAME = "nnUNetTrainer_TimeBudget"
REPORT_FILE = "time_budget.json"
PRIMUS_MODULE = "nnunetv2.training.nnUNetTrainer.primus.primus_trainers"
# the first plan times iterations 11-20: the first ones are served from batches the loader processes prepared while
# the trainer started (6 of them), so they look faster than the augmentation can keep up with
PROBE_ITERATIONS = (10, 20)
VALIDATION_COST = 0.5  # a validation iteration (forward only, no augmentation) relative to a training iteration
PLANNING = "nnunetv2.experiment_planning.plan_and_preprocess_entrypoints"
ENTRY_POINTS = {
    "plan_and_preprocess": (PLANNING, "plan_and_preprocess_entry"),
    "train": ("nnunetv2.run.run_training", "run_training_entry"),
    "predict": ("nnunetv2.inference.predict_from_raw_data", "predict_entry_point"),
}


def plan_first_epochs(
    budget_s: float, seconds_per_iteration: float, iterations: int, val_iterations: int
) -> tuple[int, int, int]:
    """``(epochs, iterations per epoch, validation iterations per epoch)`` that fit ``budget_s`` seconds.

    Whole epochs of nnU-Net's length when at least one fits; otherwise one epoch shortened to fit (at least one
    iteration of each kind).
    """
    epoch_s = seconds_per_iteration * (iterations + VALIDATION_COST * val_iterations)
    epochs = int(budget_s // epoch_s) if epoch_s > 0 else 1
    if epochs >= 1:
        return epochs, iterations, val_iterations
    share = max(budget_s, 0.0) / epoch_s
    return 1, max(1, int(iterations * share)), max(1, int(val_iterations * share))


def plan_remaining_epochs(budget_s: float, elapsed_s: float, epochs_done: int, epoch_s: float) -> int:
    """Total epochs once ``epochs_done`` took ``elapsed_s`` of ``budget_s``: as many more as fit at ``epoch_s``."""
    if epoch_s <= 0:
        return epochs_done
    return epochs_done + max(int((budget_s - elapsed_s) // epoch_s), 0)


def stub_primus() -> None:
    """Put an empty module where nnU-Net's trainer discovery would import the Primus trainers (see the docstring)."""
    sys.modules.setdefault(PRIMUS_MODULE, types.ModuleType(PRIMUS_MODULE))


def make_time_budget_trainer():
    """The ``nnUNetTrainer_TimeBudget`` class (imports nnunetv2)."""
    import torch
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    class nnUNetTrainer_TimeBudget(nnUNetTrainer):  # noqa: N801 (nnU-Net's naming: the -tr name)
        """nnU-Net's default trainer, trained for ``MEDTRANSFER_NNUNET_SECONDS`` of wall clock."""

        # no __init__: nnU-Net records its constructor's arguments by inspecting the subclass's signature

        def run_training(self):
            self.budget_s = float(os.environ[BUDGET_ENV])
            self.budget_start, self.probe_start, self.iterations_done = time.perf_counter(), None, 0
            self.reserve_s = 0.0  # the validation that still follows the training iterations of an epoch
            self.on_train_start()
            while self.current_epoch < self.num_epochs:
                epoch_start = time.perf_counter()
                self.on_epoch_start()
                self.on_train_epoch_start()
                outputs = []
                while len(outputs) < self.num_iterations_per_epoch and not (outputs and self._out_of_time()):
                    outputs.append(self.train_step(next(self.dataloader_train)))
                    self._after_iteration(len(outputs), epoch_start)
                self.on_train_epoch_end(outputs)
                with torch.no_grad():
                    self.on_validation_epoch_start()
                    batches = range(self.num_val_iterations_per_epoch)
                    self.on_validation_epoch_end([self.validation_step(next(self.dataloader_val)) for _ in batches])
                self.on_epoch_end()
                self._set_epochs(
                    plan_remaining_epochs(
                        self.budget_s, self._elapsed(), self.current_epoch, time.perf_counter() - epoch_start
                    )
                )
            self.on_train_end()
            self._write_report()

        def perform_actual_validation(self, save_probabilities: bool = False):
            self.print_to_log_file("final validation skipped: fold 'all' validates on its own training cases")

        def _elapsed(self) -> float:
            return time.perf_counter() - self.budget_start

        def _out_of_time(self) -> bool:
            return self._elapsed() + self.reserve_s >= self.budget_s

        def _after_iteration(self, done_in_epoch: int, epoch_start: float) -> None:
            self.iterations_done += 1
            first, last = PROBE_ITERATIONS
            if self.iterations_done == first:
                self.probe_start = time.perf_counter()
            if self.iterations_done != last or self.current_epoch:
                return
            per_iteration = (time.perf_counter() - self.probe_start) / (last - first)
            budget_left = self.budget_s - (epoch_start - self.budget_start)
            epochs, iterations, val_iterations = plan_first_epochs(
                budget_left, per_iteration, self.num_iterations_per_epoch, self.num_val_iterations_per_epoch
            )
            self.num_iterations_per_epoch = max(iterations, done_in_epoch)
            self.num_val_iterations_per_epoch = val_iterations
            self.reserve_s = per_iteration * VALIDATION_COST * val_iterations
            self._set_epochs(epochs)
            self.print_to_log_file(
                f"time budget {self.budget_s:.0f} s: {per_iteration:.2f} s per iteration -> {epochs} epoch(s) of "
                f"{self.num_iterations_per_epoch} + {val_iterations} validation iterations"
            )

        def _set_epochs(self, epochs: int) -> None:
            self.num_epochs = max(epochs, self.current_epoch)
            self.lr_scheduler.max_steps = max(self.num_epochs, 1)  # the poly schedule ends with the budget

        def _write_report(self) -> None:
            report = {
                "budget_seconds": self.budget_s,
                "train_seconds": self._elapsed(),
                "epochs": self.current_epoch,
                "iterations_per_epoch": self.num_iterations_per_epoch,
                "val_iterations_per_epoch": self.num_val_iterations_per_epoch,
                "iterations": self.iterations_done,
                "batch_size": self.batch_size,
                "patch_size": [int(p) for p in self.configuration_manager.patch_size],
            }
            with open(os.path.join(self.output_folder, REPORT_FILE), "w") as handle:
                json.dump(report, handle, indent=2)

    return nnUNetTrainer_TimeBudget


def register_trainer() -> None:
    """Make ``-tr nnUNetTrainer_TimeBudget`` resolvable: nnU-Net's discovery checks this module first."""
    import nnunetv2.training.nnUNetTrainer.nnUNetTrainer as home

    if not hasattr(home, TRAINER_NAME):
        setattr(home, TRAINER_NAME, make_time_budget_trainer())


def main(argv: list[str]) -> None:
    if not argv or argv[0] not in ENTRY_POINTS:
        raise SystemExit(f"usage: _nnunet_launcher.py {{{'|'.join(ENTRY_POINTS)}}} [nnU-Net arguments]")
    import importlib

    stub_primus()
    register_trainer()
    module, function = ENTRY_POINTS[argv[0]]
    sys.argv = [f"nnUNetv2_{argv[0]}", *argv[1:]]
    getattr(importlib.import_module(module), function)()


if __name__ == "__main__":
    from medtransfer.cli import run_script

    run_script(main, sys.argv[1:])
