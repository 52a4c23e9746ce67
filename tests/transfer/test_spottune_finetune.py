"""``medtransfer finetune --strategy spottune`` -> collapsed checkpoint -> ``medtransfer predict``."""

from __future__ import annotations

import pytest
import torch

from medtransfer.checkpoint import load_checkpoint
from medtransfer.cli import main
from medtransfer.models import create_model
from testkit import FINETUNE_ARGS as TRAIN
from testkit import FINETUNE_MODEL as MODEL_CFG
from testkit import blob_dataset as _dataset
from testkit import source_checkpoint as _source


@pytest.mark.slow
def test_finetune_spottune_then_predict(tmp_path):
    data, source, out = _dataset(tmp_path / "ds"), _source(tmp_path / "src.pt"), tmp_path / "run"
    argv = ["finetune", "--init", str(source), "--strategy", "spottune:lam=0.01,warmup=1", "--data", str(data)]
    assert main([*argv, "--out", str(out), "--n-labelled", "2", *TRAIN]) == 0
    ckpt = load_checkpoint(out / "checkpoints" / "checkpoint_best.pt")
    spottune = ckpt["meta"]["spottune"]
    assert set(spottune["choices"].values()) <= {"finetuned", "frozen"}
    assert spottune["finetuned_stages"][-1] == "head"
    model = create_model("unet", **{**MODEL_CFG, "out_channels": 1})
    model.load_state_dict(ckpt["state_dict"])  # a plain checkpoint of the architecture
    source_state = load_checkpoint(source)["state_dict"]
    state, frozen = model.state_dict(), {s for s, c in spottune["choices"].items() if c == "frozen"}
    for key, stage in model.parameter_stages().items():  # frozen stages hold exactly the source's weights
        if stage in frozen:
            assert torch.equal(state[key], source_state[key]), key
    pred = tmp_path / "pred"
    assert (
        main(
            [
                "predict",
                "--model",
                str(out / "checkpoints" / "checkpoint_best.pt"),
                "--input",
                str(data / "imagesTr"),
                "--output",
                str(pred),
            ]
        )
        == 0
    )
    assert len(list(pred.iterdir())) == 6
