"""The body of each of two gloo ranks for ``test_train_ddp_two_ranks.py`` (not a test module: spawned processes
import it)."""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


def _gathered(tensor: torch.Tensor) -> list[torch.Tensor]:
    out = [torch.zeros_like(tensor) for _ in range(dist.get_world_size())]
    dist.all_gather(out, tensor.detach().contiguous())
    return out


def run(rank: int, store: str, folder: str, results: str) -> None:
    os.environ["LOCAL_RANK"] = str(rank)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    try:
        from train_toy_helpers import SquaresDataset, toy_config, toy_net

        from medtransfer.models import create_model
        from medtransfer.train import CheckpointManager, StepBatchSampler, TrainBatches, Trainer
        from medtransfer.transfer import apply_strategy

        def batches(config):
            data = SquaresDataset()
            return TrainBatches(data, StepBatchSampler(len(data), 4, config.steps_per_epoch, 0, rank, 2))

        # 1. gradual unfreezing: the stages unfrozen after DDP wrapped the model must be averaged too
        torch.manual_seed(0)
        source = create_model("unet", spatial_dims=2, in_channels=1, out_channels=1, features=4, depth=2).state_dict()
        torch.manual_seed(0)
        model = create_model("unet", spatial_dims=2, in_channels=1, out_channels=1, features=4, depth=2)
        applied = apply_strategy("gradual_unfreeze:every=1,start=1", model, source, seed=0)
        config = toy_config(epochs=3, steps_per_epoch=2, checkpoint_every_steps=0, val_every=0)
        trainer = Trainer(
            model, config, batches(config), param_groups=applied.param_groups, epoch_start_hooks=applied.hooks
        )
        trainer.fit()
        unsynced = [name for name, p in model.named_parameters() if not torch.equal(*_gathered(p))]

        # 2. resume: each rank continues its own random stream
        config = toy_config(epochs=1, steps_per_epoch=2, checkpoint_every_steps=0, val_every=0)
        Trainer(toy_net(), config, batches(config), checkpoints=CheckpointManager(folder)).fit()
        after_fit = torch.rand(3)
        dist.barrier()  # rank 0 has written checkpoint_last
        resumed = Trainer(toy_net(), config, batches(config), checkpoints=CheckpointManager(folder))
        assert resumed.resume()
        after_resume = torch.rand(3)
        draws = _gathered(after_resume)
        if rank == 0:
            torch.save(
                {
                    "unsynced": unsynced,
                    "trainable": [n for n, p in model.named_parameters() if p.requires_grad],
                    "same_stream_after_resume": bool(torch.equal(after_fit, after_resume)),
                    "ranks_differ_after_resume": not torch.equal(draws[0], draws[1]),
                },
                results,
            )
        same = torch.tensor([float(torch.equal(after_fit, after_resume))])
        dist.all_reduce(same)
        if rank == 0:
            record = torch.load(results, weights_only=True)
            record["every_rank_same_stream"] = int(same.item()) == 2
            torch.save(record, results)
    finally:
        dist.destroy_process_group()
