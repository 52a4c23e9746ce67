"""Subprocess entry of the kill -9 resume test: ``python train_resume_script.py OUT [--resume] [--delay S]``."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import torch  # noqa: E402
from train_toy_helpers import SquaresDataset, toy_batches, toy_config, toy_net  # noqa: E402

from medtransfer.train import CheckpointManager, MetricsHistory, Trainer  # noqa: E402


def main(argv: list[str]) -> None:
    out = Path(argv[0])
    delay = float(argv[argv.index("--delay") + 1]) if "--delay" in argv else 0.0
    torch.set_num_threads(1)
    config = toy_config(epochs=4, steps_per_epoch=6, checkpoint_every_steps=3)
    trainer = Trainer(
        toy_net(),
        config,
        toy_batches(config, SquaresDataset(delay=delay)),
        checkpoints=CheckpointManager(out),
        history=MetricsHistory(out / "history.jsonl"),
    )
    trainer.fit(resume="--resume" in argv)
    torch.save(trainer.model.state_dict(), out / "final.pt")


if __name__ == "__main__":
    main(sys.argv[1:])
