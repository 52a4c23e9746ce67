"""Two gloo ranks on the CPU: what DDP must keep in step across processes (a few seconds)."""

from __future__ import annotations

import torch
import torch.multiprocessing as mp
from ddp_two_ranks_worker import run


def test_two_ranks_stay_in_sync_and_resume_their_own_random_streams(tmp_path):
    results = tmp_path / "results.pt"
    mp.spawn(run, args=(str(tmp_path / "store"), str(tmp_path / "ckpt"), str(results)), nprocs=2)
    record = torch.load(results, weights_only=True)
    # gradual_unfreeze:every=1,start=1 trains the decoder's later stages from epochs 1 and 2 on, after DDP wrapped
    # the model at epoch 0: before the re-wrap their weights drifted apart between the ranks (max diff ~1e-2)
    assert any(name.startswith("decoder") for name in record["trainable"])
    assert record["unsynced"] == []
    # checkpoint_last holds every rank's random state: after a resume each rank draws what it would have drawn
    # (before, every rank restored rank 0's and augmented identically)
    assert record["every_rank_same_stream"]
    assert record["ranks_differ_after_resume"]
