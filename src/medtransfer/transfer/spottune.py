"""SpotTUnet (Zakazov et al., MICCAI 2021): a learned per-stage choice between a frozen and a fine-tuned copy.

Every stage of a named-stage model (``model.stage_modules()``) is replaced by a :class:`GatedStage` holding a
frozen pretrained copy and a trainable copy.  A global (input-independent) policy holds two logits per stage;
in training a hard Gumbel-softmax sample (straight-through gradients) picks the copy, at evaluation the argmax
does.  The stage output is ``g * finetuned(x) + (1 - g) * frozen(x)`` with ``g`` in {0, 1}, so skip connections
and the models' own forward code are untouched (the gate sits at the stage boundary).  A regulariser
``lam * sum(g)`` pushes toward freezing; :class:`SpotTuneLoss` adds it to the task loss.

After training, :func:`collapse` returns a plain model of the original architecture that uses, per stage, the
chosen copy, so ``predict`` and checkpoints work unchanged.

Example:
    >>> import torch
    >>> from medtransfer.models import create_model
    >>> source = create_model("unet", features=4, depth=2).state_dict()
    >>> prepared = prepare_spottune("spottune:lam=0.01", create_model("unet", features=4, depth=2), source)
    >>> sorted(prepared.model.policy())[:2]
    ['bottleneck', 'dec1']
    >>> plain = collapse(prepared.model)
    >>> plain(torch.zeros(1, 1, 8, 8)).shape
    torch.Size([1, 1, 8, 8])
"""

from __future__ import annotations

import copy
import dataclasses
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError, did_you_mean
from ..models.loading import load_pretrained

log = logging.getLogger(__name__)

FINETUNED, FROZEN = "finetuned", "frozen"
POLICY_GROUP = "spottune_policy"


@dataclass(frozen=True)
class SpotTuneParams:
    """Parameters of the ``spottune`` strategy (``spottune:lam=0.01,temperature=1``)."""

    lam: float = field(default=0.01, metadata={"help": "penalty per fine-tuned stage (pushes toward freezing)"})
    temperature: float = field(default=1.0, metadata={"help": "Gumbel-softmax temperature"})
    policy_lr_scale: float = field(default=10.0, metadata={"help": "policy logits lr = base lr * this"})
    head: str = field(default="finetune", metadata={"help": "'finetune' (always train the head) or 'gate'"})
    warmup: int = field(default=0, metadata={"help": "epochs training every fine-tuned copy (gates fixed to 1)"})

    def __post_init__(self) -> None:
        if self.lam < 0 or self.temperature <= 0 or self.policy_lr_scale <= 0 or self.warmup < 0:
            raise ConfigError(
                "spottune: need lam >= 0, temperature > 0, policy_lr_scale > 0 and warmup >= 0, "
                f"got {dataclasses.asdict(self)}"
            )
        if self.head not in ("finetune", "gate"):
            raise ConfigError(f"spottune: head must be 'finetune' or 'gate', got {self.head!r}")


class _Gates:
    """Shared gate values (one per gated stage), written by :class:`SpotTuneModel` before each forward."""

    def __init__(self) -> None:
        self.values: torch.Tensor | None = None


class GatedStage(nn.Module):
    """``g * finetuned(*args) + (1 - g) * frozen(*args)``; the frozen copy stays in eval mode and has no grads."""

    def __init__(self, finetuned: nn.Module, frozen: nn.Module, index: int, gates: _Gates) -> None:
        super().__init__()
        self.finetuned, self.frozen, self.index = finetuned, frozen, index
        self._gates = gates
        for param in self.frozen.parameters():
            param.requires_grad_(False)
        self.frozen.eval()

    def train(self, mode: bool = True) -> GatedStage:
        super().train(mode)
        self.frozen.eval()  # frozen norm statistics, whatever the trainer does
        return self

    def forward(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        gates = self._gates.values
        if gates is None:
            raise RuntimeError("GatedStage called outside SpotTuneModel.forward")
        g = gates[self.index]
        if not g.requires_grad:  # deterministic (evaluation): run the chosen copy only
            return self.finetuned(*args, **kwargs) if bool(g > 0.5) else self.frozen(*args, **kwargs)
        # both copies run: the straight-through gradient of g is finetuned(x) - frozen(x); gradients still flow
        # through the frozen copy to the stages before it
        return g * self.finetuned(*args, **kwargs) + (1 - g) * self.frozen(*args, **kwargs)


class SpotTuneModel(nn.Module):
    """A named-stage model whose stages are gated between a frozen and a fine-tuned copy.

    Args:
        model: the target model, already holding the pretrained weights (:func:`prepare_spottune` loads them).
        temperature: Gumbel-softmax temperature.
        lam: regulariser weight (penalty per fine-tuned stage).
        always_finetune: stages not gated (trained directly), e.g. a freshly initialised ``head``.

    The gated model is ``self.model`` (its stages are :class:`GatedStage` modules); ``policy_logits`` has one
    row per gated stage: ``[frozen, finetuned]`` logits.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        temperature: float = 1.0,
        lam: float = 0.01,
        always_finetune: tuple[str, ...] = ("head",),
    ) -> None:
        super().__init__()
        if not hasattr(model, "stage_modules"):
            raise ConfigError(f"{type(model).__name__} has no named stages; use a medtransfer.models model")
        stages = model.stage_modules()
        unknown = [s for s in always_finetune if s not in stages]
        if unknown:
            raise ConfigError(did_you_mean(unknown[0], stages, what="stage"))
        self.temperature, self.lam = float(temperature), float(lam)
        self.gated_names = [s for s in stages if s not in always_finetune]
        self.always_finetune = list(always_finetune)
        self._gates = _Gates()
        for index, name in enumerate(self.gated_names):
            stage = stages[name]
            _replace_module(model, stage, GatedStage(stage, copy.deepcopy(stage), index, self._gates))
        self.model = model
        self.policy_logits = nn.Parameter(torch.zeros(len(self.gated_names), 2))
        self.spatial_dims = getattr(model, "spatial_dims", 2)
        self._last_gates: torch.Tensor | None = None
        # warm-up: every gate is 1 (full fine-tuning of the copies); a buffer, so checkpoints saved during warm-up
        # collapse to the model that was validated
        self.register_buffer("warmup_flag", torch.tensor(False))

    @property
    def warmup(self) -> bool:
        return bool(self.warmup_flag)

    @warmup.setter
    def warmup(self, value: bool) -> None:
        self.warmup_flag.fill_(bool(value))

    # ------------------------------------------------------------------------------------------- policy
    def sample_gates(self) -> torch.Tensor:
        """Per gated stage ``g`` in {0, 1}: a hard Gumbel-softmax sample in training, the argmax otherwise
        (all ones during warm-up)."""
        if self.warmup:
            return torch.ones(len(self.gated_names), device=self.policy_logits.device)
        if self.training:
            return F.gumbel_softmax(self.policy_logits, tau=self.temperature, hard=True)[:, 1]
        return (self.policy_logits[:, 1] > self.policy_logits[:, 0]).to(self.policy_logits.dtype).detach()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gates = self.sample_gates()
        self._gates.values = gates.to(x.device)
        self._last_gates = gates if self.training else None
        try:
            return self.model(x)
        finally:
            self._gates.values = None

    def regularization(self) -> torch.Tensor:
        """``lam * (number of fine-tuned stages)`` of the last training forward (straight-through gradient);
        without one, ``lam`` times the expected number under the policy."""
        gates = self._last_gates if self._last_gates is not None else self.probabilities()
        return self.lam * gates.sum()

    def probabilities(self) -> torch.Tensor:
        """Per gated stage, the probability of using the fine-tuned copy."""
        return torch.softmax(self.policy_logits, dim=-1)[:, 1]

    def policy(self) -> dict[str, float]:
        """``{stage: p_finetune}`` for every gated stage (input to output order)."""
        probs = self.probabilities().detach().cpu().tolist()
        return dict(zip(self.gated_names, (float(p) for p in probs), strict=True))

    def choices(self) -> dict[str, str]:
        """The deterministic choice per stage: ``finetuned`` or ``frozen`` (ungated stages: ``finetuned``)."""
        logits = self.policy_logits.detach()
        tuned = [self.warmup or bool(logits[i, 1] > logits[i, 0]) for i in range(len(self.gated_names))]
        chosen = {n: FINETUNED if t else FROZEN for n, t in zip(self.gated_names, tuned, strict=True)}
        return {name: chosen.get(name, FINETUNED) for name in self.stage_names()}

    def describe(self) -> dict[str, Any]:
        """JSON-serialisable account (for the run folder and checkpoint meta)."""
        return {
            "strategy": "spottune",
            "lam": self.lam,
            "temperature": self.temperature,
            "always_finetune": list(self.always_finetune),
            "policy": self.policy(),
            "warmup": self.warmup,
            "choices": self.choices(),
            "finetuned_stages": [s for s, c in self.choices().items() if c == FINETUNED],
        }

    # -------------------------------------------------------------------------------------------- stages
    def stage_names(self) -> list[str]:
        return list(self.model.stage_modules())

    def stage_modules(self) -> dict[str, nn.Module]:
        return self.model.stage_modules()

    def finetuned_stage_modules(self) -> dict[str, nn.Module]:
        """Stage -> trainable copy (the ungated stages themselves)."""
        return {n: m.finetuned if isinstance(m, GatedStage) else m for n, m in self.stage_modules().items()}

    def frozen_stage_modules(self) -> dict[str, nn.Module]:
        """Gated stage -> frozen pretrained copy."""
        return {n: m.frozen for n, m in self.stage_modules().items() if isinstance(m, GatedStage)}

    def parameter_groups(self, policy_lr_scale: float = 10.0) -> list[dict[str, Any]]:
        """Optimiser groups: one per stage (its trainable copy, ``lr_scale`` 1) and the policy logits
        (``lr_scale=policy_lr_scale``, no weight decay)."""
        groups = [
            {"params": [p for p in m.parameters() if p.requires_grad], "lr_scale": 1.0, "name": n}
            for n, m in self.finetuned_stage_modules().items()
        ]
        groups = [g for g in groups if g["params"]]
        policy = {"params": [self.policy_logits], "lr_scale": float(policy_lr_scale), "name": POLICY_GROUP}
        return [*groups, policy | {"weight_decay": 0.0}]


class SpotTuneLoss(nn.Module):
    """``base(logits, target) + model.regularization()`` (the SpotTUnet objective)."""

    def __init__(self, base: nn.Module, model: SpotTuneModel) -> None:
        super().__init__()
        self.base = base
        self._model = [model]  # not a submodule: the loss owns no parameters

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.base(logits, target) + self._model[0].regularization()


def collapse(spot: SpotTuneModel) -> nn.Module:
    """A plain model of the original architecture using, per stage, the chosen copy (deep copies)."""
    plain = copy.deepcopy(spot.model)
    choices = spot.choices()
    for name, stage in list(plain.stage_modules().items()):
        if isinstance(stage, GatedStage):
            chosen = stage.finetuned if choices[name] == FINETUNED else stage.frozen
            chosen.requires_grad_(True)
            _replace_module(plain, stage, chosen)
    plain.train(spot.training)
    return plain


def _replace_module(root: nn.Module, old: nn.Module, new: nn.Module) -> None:
    """Point every reference to ``old`` inside ``root`` (ModuleDict entries, attributes) at ``new``."""
    found = False
    for parent in list(root.modules()):
        for key, child in list(parent._modules.items()):
            if child is old and parent is not new:
                parent._modules[key] = new
                found = True
    if not found:
        raise ValueError(f"module {type(old).__name__} not found in {type(root).__name__}")


# ---------------------------------------------------------------------------------------- strategy glue


@dataclass
class SpotTunePlan:
    """What :func:`prepare_spottune` returns: the gated model to train and everything the trainer needs."""

    model: SpotTuneModel
    params: SpotTuneParams
    param_groups: list[dict[str, Any]]
    audit: dict[str, Any] | None
    spec: str

    def wrap_loss(self, base: nn.Module) -> SpotTuneLoss:
        return SpotTuneLoss(base, self.model)

    def on_epoch_start(self, model: nn.Module, epoch: int, optimizer: Any = None) -> bool:
        """Epoch hook (``Trainer(epoch_start_hooks=[plan.on_epoch_start])``): warm-up for ``params.warmup`` epochs.

        Stateless (depends only on ``epoch``), so a resumed run lands in the same state.
        """
        warm = epoch < self.params.warmup
        changed = warm != self.model.warmup
        self.model.warmup = warm
        return changed

    def description(self) -> dict[str, Any]:
        return {"spec": self.spec, "params": dataclasses.asdict(self.params), **self.model.describe()}


def prepare_spottune(
    spec: str | dict[str, Any] | SpotTuneParams,
    model: nn.Module,
    pretrained_state: dict | str | None,
    *,
    seed: int | None = None,
) -> SpotTunePlan:
    """Load the pretrained weights into ``model`` and wrap it for SpotTune training.

    Use: ``plan = prepare_spottune("spottune:lam=0.01", model, ckpt)``; train ``plan.model`` with
    ``param_groups=plan.param_groups`` and ``loss=plan.wrap_loss(base_loss)``; store ``plan.description()`` in
    the checkpoint meta; at the end ``collapse(plan.model)`` is the plain model to save for ``predict``.

    Raises:
        ConfigError: no pretrained weights (SpotTune needs a frozen source), or bad parameters.
    """
    if isinstance(spec, SpotTuneParams):
        params = spec
    else:
        from .registry import create_params

        entry, params = create_params(spec)
        if entry.name != "spottune":
            raise ConfigError(f"not a spottune spec: {spec!r}")
    if pretrained_state is None:
        raise ConfigError("strategy 'spottune' keeps frozen pretrained copies; give a source checkpoint (--init)")
    audit = load_pretrained(model, pretrained_state)
    if seed is not None:
        torch.manual_seed(seed)
    always = ("head",) if params.head == "finetune" else ()
    spot = SpotTuneModel(model, temperature=params.temperature, lam=params.lam, always_finetune=always)
    log.info("spottune: gating stages %s (lam=%g, temperature=%g)", spot.gated_names, params.lam, params.temperature)
    spec_text = "spottune:" + ",".join(f"{k}={v}" for k, v in dataclasses.asdict(params).items())
    audit_dict = audit.to_dict() if hasattr(audit, "to_dict") else None
    return SpotTunePlan(spot, params, spot.parameter_groups(params.policy_lr_scale), audit_dict, spec_text)


def applied_spottune(params: SpotTuneParams, model: nn.Module, pretrained: Any, seed: int | None):
    """The registry's ``prepare`` hook: :func:`prepare_spottune` as an
    :class:`~medtransfer.transfer.apply.AppliedStrategy` (train the gated model, add the penalty to the loss,
    collapse checkpoints and the trained model to plain ones)."""
    from .apply import AppliedStrategy, plain_data

    plan = prepare_spottune(params, model, pretrained, seed=seed)
    return AppliedStrategy(
        param_groups=plan.param_groups,
        hooks=[plan.on_epoch_start],
        description=plain_data(plan.description()),
        audit=plain_data(plan.audit),
        model=plan.model,
        wrap_loss=plan.wrap_loss,
        finish=collapse_checkpoint,
        plain_model=collapse,
    )


DETAILS = """SpotTUnet (Zakazov et al., MICCAI 2021): every stage of the model gets a frozen pretrained copy and a
trainable copy; a learned per-stage policy (two logits per stage, hard Gumbel-softmax in training, argmax at
evaluation) picks which copy runs.  'lam' penalises each fine-tuned stage (pushes toward freezing); 'warmup'
epochs first train every fine-tuned copy.  After training the checkpoints are collapsed to a plain model of
the original architecture (the chosen copy per stage), so predict loads them unchanged; the learned policy is
kept in the checkpoint's meta (meta.spottune).  Needs a source checkpoint (--init).  See docs/beyond.md."""


def collapse_checkpoint(path: str | Path, out: str | Path | None = None) -> Path:
    """Rewrite a checkpoint of a trained :class:`SpotTuneModel` as a plain checkpoint of its architecture.

    The checkpoint must hold ``model`` (``{"name", "config"}`` of the wrapped architecture), the gated
    ``state_dict`` and ``meta["strategy"]`` from :meth:`SpotTunePlan.description`.  The result (written
    atomically to ``out``, default in place) holds the collapsed weights, so ``predict`` loads it unchanged;
    ``meta["spottune"]`` keeps the learned policy.  A checkpoint that is already plain is left as is.
    """
    from ..checkpoint import load_checkpoint, save_checkpoint
    from ..models import create_model

    path = Path(path)
    ckpt = load_checkpoint(path)
    if "policy_logits" not in ckpt["state_dict"]:
        return path
    strategy = (ckpt.get("meta") or {}).get("strategy") or {}
    spot = SpotTuneModel(
        create_model(ckpt["model"]["name"], **ckpt["model"]["config"]),
        temperature=float(strategy.get("temperature", 1.0)),
        lam=float(strategy.get("lam", 0.0)),
        always_finetune=tuple(strategy.get("always_finetune", ("head",))),
    )
    state = dict(ckpt["state_dict"])
    state.setdefault("warmup_flag", torch.tensor(False))  # checkpoints written before warm-up existed
    spot.load_state_dict(state)
    spot.eval()
    ckpt["state_dict"] = collapse(spot).state_dict()
    ckpt["meta"] = {**(ckpt.get("meta") or {}), "spottune": spot.describe()}
    ckpt.pop("trainer", None)  # a collapsed checkpoint cannot resume SpotTune training
    return save_checkpoint(out or path, ckpt)
