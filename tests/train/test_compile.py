"""torch.compile in training: same losses as eager, checkpoints interchangeable with eager models."""

from __future__ import annotations

import logging

import pytest
import torch
from train_toy_helpers import toy_batches, toy_config, toy_net

from medtransfer.checkpoint import load_checkpoint
from medtransfer.train import Trainer
from medtransfer.train import compile as compile_mod
from medtransfer.train.checkpointing import CheckpointManager
from medtransfer.train.compile import compile_model, is_compiled, strip_compile_prefix


def test_compile_model_wraps_and_shares_parameters():
    if not compile_mod.compiler_available():
        pytest.skip("no C++ compiler for inductor")
    model = toy_net()
    compiled = compile_model(model)  # lazy: nothing is compiled until the first call
    assert is_compiled(compiled)
    assert not is_compiled(model)
    assert compile_model(compiled) is compiled  # compiling twice is a no-op
    assert all(a is b for a, b in zip(compiled.parameters(), model.parameters(), strict=True))
    assert list(model.state_dict()) == list(toy_net().state_dict())


def test_strip_compile_prefix_loads_wrapper_checkpoint_into_eager_model():
    wrapped = torch.compile(toy_net())  # lazy: nothing is compiled until the first call
    assert is_compiled(wrapped)
    assert all(k.startswith("_orig_mod.") for k in wrapped.state_dict())
    eager = toy_net()
    torch.nn.init.zeros_(eager[0].weight)
    eager.load_state_dict(strip_compile_prefix(wrapped.state_dict()))
    assert torch.equal(eager[0].weight, wrapped._orig_mod[0].weight)
    assert strip_compile_prefix({"module._orig_mod.0.weight": 1, "1.bias": 2}) == {"module.0.weight": 1, "1.bias": 2}


def test_without_compiler_the_model_stays_eager(monkeypatch, caplog):
    monkeypatch.setattr(compile_mod, "compiler_available", lambda: False)
    model = toy_net()
    with caplog.at_level(logging.WARNING, logger=compile_mod.__name__):
        assert compile_model(model) is model
    assert not is_compiled(model)
    assert "C++ compiler" in caplog.text


@pytest.mark.slow
def test_compiled_training_matches_eager_and_its_checkpoint_loads_into_eager(tmp_path):
    if not compile_mod.compiler_available():
        pytest.skip("no C++ compiler for inductor")
    from torch._dynamo.utils import counters

    counters.clear()
    results = {}
    for compiled in (False, True):
        config = toy_config(epochs=2, steps_per_epoch=3, val_every=0, compile=compiled)
        checkpoints = CheckpointManager(tmp_path / f"compiled{compiled}")
        trainer = Trainer(toy_net(dropout=0.0), config, toy_batches(config), checkpoints=checkpoints)
        assert is_compiled(trainer.network) == compiled
        assert not is_compiled(trainer.model)
        result = trainer.fit()
        results[compiled] = (trainer, torch.tensor([r["train_loss"] for r in result.history]), result)
    assert counters["stats"]["unique_graphs"] >= 1  # something was really compiled (not silently skipped)
    (_, eager_curve, _), (trainer, compiled_curve, result) = results[False], results[True]
    assert eager_curve[-1] < eager_curve[0]
    assert torch.allclose(compiled_curve, eager_curve, rtol=1e-4, atol=1e-5), (compiled_curve, eager_curve)

    state = load_checkpoint(result.last_checkpoint)["state_dict"]
    assert list(state) == list(toy_net().state_dict())
    eager = toy_net()
    eager.load_state_dict(state)
    x = torch.randn(2, 1, 16, 16)
    trainer.network.eval(), eager.eval()
    with torch.no_grad():  # the compiled network (recompiled for eval mode) and the reloaded eager model agree
        assert torch.allclose(trainer.network(x), eager(x), rtol=1e-4, atol=1e-5)
    eager_final = results[False][0].model.state_dict()
    for key, value in trainer.model.state_dict().items():
        assert torch.allclose(value.float(), eager_final[key].float(), rtol=1e-3, atol=1e-5), key
