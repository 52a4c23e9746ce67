"""The keys a grid cell's config may hold, taken from the code that reads them; checked when a grid file loads.

A typo in a grid file (``finetun:``, ``tolerence_mm``, ``num_cpu``) must not be dropped without a word, nor fail
every cell at run time: :func:`check_cell_config` checks ``defaults`` and every ``overrides[i].set`` key by key,
at every level, and names the file, the key path and the allowed keys::

    grid.yaml: defaults.finetun: unknown key 'finetun'; did you mean 'finetune'? Allowed: classification, ...

The allowed keys are not a second hand-written list: each section comes from what consumes it.

==================================  ================================================================
``finetune`` (also under a source)  :class:`~medtransfer.finetune.FinetuneConfig` fields, minus
                                    those the grid sets per cell (:data:`SET_BY_THE_GRID`)
``finetune.train``                  :class:`~medtransfer.train.config.TrainConfig` fields
``finetune.preprocess``             :class:`~medtransfer.data.preprocess.PreprocessConfig` fields
``eval``                            :data:`medtransfer.experiments.evaluate_cell.OPTION_KEYS`
``resources``                       :data:`medtransfer.experiments.executors.RESOURCE_KEYS`
``data``, ``sources.<name>``        :data:`~medtransfer.experiments.sources.DATA_KEYS`, ``SOURCE_KEYS``
``teacher_student``                 ``cells_semi.OPTION_KEYS``; ``pseudo`` / ``augment``: the fields of
                                    :class:`~medtransfer.semi.PseudoLabelConfig` / ``StrongAugmentConfig``
``classification``                  the fields of :class:`~medtransfer.finetune.ClassificationOptions`
``dummy``                           :data:`~medtransfer.experiments.kinds.DUMMY_KEYS`
``race`` (top level, not a cell's)  :data:`medtransfer.experiments.racing.RACE_KEYS` (:func:`check_race_section`)
==================================  ================================================================

``finetune.model_config`` depends on the model (the source checkpoint's architecture, or ``finetune.model``),
so ``create_model`` checks it when the cell builds it.  A cell kind registered with
``register_cell_kind(name, function, sections=(...))`` adds its own top-level sections (not checked inside).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError, did_you_mean

# FinetuneConfig fields that experiments.cells.finetune_config sets for every cell (and sources.train_source for
# every grid-trained source), whatever the grid file says: a value given there would be ignored.
SET_BY_THE_GRID = {
    "data": "the dataset is data.root / data.datasets[<target>]",
    "out": "the run folder is chosen by the grid",
    "init": "the source model is axes.source",
    "strategy": "the strategy is axes.strategy",
    "n_labelled": "the label budget is axes.budget",
    "every_kth_slice": "the label budget is axes.budget",
    "seed": "the seed is axes.seed",
}


@dataclass(frozen=True)
class Section:
    """The allowed keys of one mapping of a cell's config.

    Attributes:
        keys: the allowed keys.
        children: sub-sections checked in turn (a :class:`Section`, :class:`Names` for user-chosen keys, or a
            function that builds one when it is needed).
        refused: keys that exist but may not be set here, with the reason.
        scalar: the section may also be a plain value (``data: DIR``).
    """

    keys: tuple[str, ...]
    children: Mapping[str, Section | Names | Callable[[], Section | Names]] = field(default_factory=dict)
    refused: Mapping[str, str] = field(default_factory=dict)
    scalar: bool = False


@dataclass(frozen=True)
class Names:
    """A mapping of user-chosen names (source models, datasets) whose values follow ``section`` (None: any)."""

    section: Section | Callable[[], Section] | None = None


def check_cell_config(values: Any, where: str, path: str) -> None:
    """Check a (partial) cell config, e.g. a grid's ``defaults`` or an override's ``set``, against the schema.

    Raises:
        ConfigError: a key that no consumer reads, or a section that is not a mapping, named by its path.
    """
    _check(values, cell_config_schema(), where, path)


def check_race_section(values: Any, where: str) -> None:
    """Check the keys of a grid file's ``race`` section (:data:`~medtransfer.experiments.racing.RACE_KEYS`).

    Raises:
        ConfigError: the section is not a mapping or has an unknown key, named by its path (``race.<key>``).
    """
    from .racing import RACE_KEYS

    _check(values, Section(RACE_KEYS), where, "race")


def _check(values: Any, section: Section | Names | Callable, where: str, path: str) -> None:
    if values is None:
        return
    if callable(section):
        section = section()
    if isinstance(section, Names):
        if not isinstance(values, Mapping):
            raise ConfigError(f"{where}: {path} must be a mapping of names, got {values!r}")
        if section.section is not None:
            for name, value in values.items():
                _check(value, section.section, where, f"{path}.{name}")
        return
    if not isinstance(values, Mapping):
        if section.scalar:
            return
        raise ConfigError(f"{where}: {path} must be a mapping with keys {', '.join(section.keys)}; got {values!r}")
    for key, value in values.items():
        if key in section.refused:
            raise ConfigError(f"{where}: {path}.{key}: set by the grid for each cell ({section.refused[key]})")
        if key not in section.keys:
            raise ConfigError(f"{where}: {path}.{key}: {did_you_mean(str(key), section.keys, what='key')}")
        if key in section.children:
            _check(value, section.children[key], where, f"{path}.{key}")


def cell_config_schema() -> Section:
    """The schema of a cell's config (below the axes): built-in sections plus registered kinds' sections."""
    from .kinds import extra_sections

    children: dict[str, Section | Names | Callable[[], Section | Names]] = dict(BUILTIN_SECTIONS)
    children.update({name: Names() for name in extra_sections() if name not in children})
    return Section(tuple(sorted(("kind", "threads", *children))), children)


# Each section is built when a grid uses it: its consumers import torch, a grid of `dummy` cells needs none.
@functools.cache
def _finetune() -> Section:
    from ..data.preprocess import PreprocessConfig
    from ..finetune import FinetuneConfig
    from ..train.config import TrainConfig

    return Section(
        tuple(k for k in _fields(FinetuneConfig) if k not in SET_BY_THE_GRID),
        {
            "train": Section(_fields(TrainConfig), {"extra": Names()}),
            "preprocess": Section(_fields(PreprocessConfig)),
            "model_config": Names(),
        },
        refused=SET_BY_THE_GRID,
    )


def _data() -> Section:
    from .sources import DATA_KEYS

    return Section(DATA_KEYS, {"datasets": Names()}, scalar=True)


def _sources() -> Names:
    from .sources import SOURCE_KEYS

    return Names(Section(SOURCE_KEYS, {"finetune": _finetune}))


def _eval() -> Section:
    from .evaluate_cell import OPTION_KEYS

    return Section(OPTION_KEYS)


def _resources() -> Section:
    from .executors import RESOURCE_KEYS

    return Section(RESOURCE_KEYS)


def _teacher_student() -> Section:
    from ..semi.augment import StrongAugmentConfig
    from ..semi.pseudo import PseudoLabelConfig
    from .cells_semi import OPTION_KEYS

    children = {"pseudo": Section(_fields(PseudoLabelConfig)), "augment": Section(_fields(StrongAugmentConfig))}
    return Section(OPTION_KEYS, children)


def _classification() -> Section:
    from ..finetune import ClassificationOptions

    return Section(_fields(ClassificationOptions))


def _dummy() -> Section:
    from .kinds import DUMMY_KEYS

    return Section(DUMMY_KEYS)


BUILTIN_SECTIONS = {
    "data": _data,
    "finetune": _finetune,
    "sources": _sources,
    "eval": _eval,
    "resources": _resources,
    "teacher_student": _teacher_student,
    "classification": _classification,
    "dummy": _dummy,
}


def _fields(cls: type) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(cls))


# --- values: the checks the cell functions make, made for every cell when the grid loads ------------------------

REFERENCE_STRATEGIES = ("baseline", "oracle")  # references of the finetune kind (experiments.cells), no transfer


def check_cell_values(config: Mapping[str, Any], where: str) -> None:
    """Check the values of one resolved cell config with the validation its cell function runs first.

    Every kind: ``resources`` (``num_cpus`` / ``num_gpus``, as the executors read them) and ``threads``.  Built-in
    kinds that train (``finetune``, ``teacher_student``, ``classification``): the strategy (name, parameters and
    their ranges, the task it serves), the ``finetune`` options of the cell and of each grid-trained source
    (:class:`~medtransfer.finetune.FinetuneConfig`, ``train`` as :class:`~medtransfer.train.config.TrainConfig`,
    ``preprocess``, the model name), ``eval`` (:data:`EVAL_RULES`) and the kind's own section.  Other kinds
    (``dummy``, registered ones) are not checked further here.  What needs the data or the model's layers (e.g.
    ``first_k:99`` on an 8-stage model) is checked when the cell runs.

    Raises:
        ConfigError: ``<where>: <key path> (cell <id>): <the cell function's own message>``.
    """
    kind = config.get("kind")
    cell = _cell_label(config)
    _check_runtime(config, where, cell)
    check = _VALUE_CHECKS.get(str(kind)) if isinstance(kind, str) else None
    if check is not None:
        _check_eval(config, where, cell)
        check(config, where, cell)


def _check_runtime(config: Mapping[str, Any], where: str, cell: str) -> None:
    """``resources`` as the executors read them (:func:`~medtransfer.experiments.executors.cell_resources`: numbers
    >= 0; the schema check has refused other keys) and ``threads`` (the cell's torch threads; unset:
    ``resources.num_cpus``)."""
    resources = config.get("resources")
    for key, value in resources.items() if isinstance(resources, Mapping) else ():
        if not (_is_number(value) and math.isfinite(value) and value >= 0):
            raise ConfigError(
                f"{where}: resources.{key} (cell {cell}): must be a number >= 0 (what the executor reserves for "
                f"the cell), got {value!r}"
            )
    threads = config.get("threads")
    if threads is not None and not (_is_int(threads) and threads >= 1):
        raise ConfigError(
            f"{where}: threads (cell {cell}): must be an integer >= 1 (torch threads of the cell; leave it out to "
            f"use resources.num_cpus), got {threads!r}"
        )


# eval key -> (what is allowed, test); what evaluate_cell and the cells read (defaults in evaluate_test_cases)
EVAL_RULES: dict[str, tuple[str, Callable[[Any], bool]]] = {
    "max_test_cases": (
        "an integer >= 1, or null for every held-out case",
        lambda v: v is None or (_is_int(v) and v >= 1),
    ),
    "tolerance_mm": ("a number > 0 (mm)", lambda v: _is_number(v) and math.isfinite(v) and v > 0),
    "surface_1mm": ("true or false", lambda v: isinstance(v, bool)),
    "lesions": ("auto, true or false", lambda v: v == "auto" or isinstance(v, bool)),
    "save_cases": ("an integer >= 0", lambda v: _is_int(v) and v >= 0),
    "checkpoint": ("last or best", lambda v: v in ("last", "best")),
}


def _check_eval(config: Mapping[str, Any], where: str, cell: str) -> None:
    """The ``eval`` options (:data:`EVAL_RULES`; ``lesion_iou`` as the lesion metrics check it)."""
    from .evaluate_cell import lesion_iou

    options = config.get("eval")
    if not isinstance(options, Mapping):
        return  # absent; anything else was refused by the schema check
    for key, (allowed, valid) in EVAL_RULES.items():
        if key in options and not valid(options[key]):
            raise ConfigError(f"{where}: eval.{key} (cell {cell}): must be {allowed}, got {options[key]!r}")
    if "lesion_iou" in options:
        try:
            lesion_iou(dict(options))
        except ConfigError as err:
            raise ConfigError(
                f"{where}: eval.lesion_iou (cell {cell}): {_without_key(err, 'eval.lesion_iou')}"
            ) from err


def _without_key(err: ConfigError, key: str) -> str:
    text = str(err)
    return text[len(key) :].lstrip(" :") if text.startswith(key) else text


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _cell_label(config: Mapping[str, Any]) -> str:
    return str((config.get("grid") or {}).get("cell_id", "?"))


def _check_finetune_kind(config: Mapping[str, Any], where: str, cell: str) -> None:
    from ..transfer.registry import Task

    strategy = str(config.get("strategy") or "scratch")
    if strategy not in REFERENCE_STRATEGIES:
        _check_strategy(strategy, Task.SEGMENTATION, where, "axes.strategy")
    _check_finetune_values(config, where, cell)


def _check_teacher_student_kind(config: Mapping[str, Any], where: str, cell: str) -> None:
    from ..semi.augment import StrongAugmentConfig
    from ..semi.pseudo import PseudoLabelConfig
    from ..transfer.registry import Task
    from .cells_semi import base_strategy

    try:
        base = base_strategy(dict(config))
    except ConfigError as err:
        raise ConfigError(f"{where}: axes.strategy: {err}") from err
    _check_strategy(base, Task.TEACHER_STUDENT, where, "axes.strategy (base strategy of teacher_student)")
    options = config.get("teacher_student") or {}
    for key, cls in (("pseudo", PseudoLabelConfig), ("augment", StrongAugmentConfig)):
        if isinstance(options.get(key), Mapping):
            _call(lambda cls=cls, key=key: cls(**options[key]), where, f"teacher_student.{key}", cell)
    _check_finetune_values(config, where, cell)


def _check_classification_kind(config: Mapping[str, Any], where: str, cell: str) -> None:
    from ..finetune import ClassificationOptions
    from ..transfer.registry import Task

    _check_strategy(str(config.get("strategy") or "scratch"), Task.CLASSIFICATION, where, "axes.strategy")
    _call(
        lambda: ClassificationOptions.from_dict(config.get("classification"), where="classification"), where, "", cell
    )
    _check_finetune_values(config, where, cell)


def _check_strategy(spec: str, task: Any, where: str, path: str) -> None:
    """The strategy as ``run_finetune`` checks it (name, parameters, task) plus the ranges its builder checks."""
    from ..transfer.registry import check_strategy

    try:
        entry, _ = check_strategy(spec)
        entry.check_task(task)
    except ConfigError as err:
        named = "" if repr(spec) in str(err) else f"{spec!r}: "
        raise ConfigError(f"{where}: {path}: {named}{err}") from err


def _check_finetune_values(config: Mapping[str, Any], where: str, cell: str) -> None:
    from ..finetune import FinetuneConfig

    def cell_run():
        values = dict(config)
        if values.get("strategy") == "oracle":  # as experiments.cells.finetune_config: scratch, every label
            values.update(strategy="scratch", budget={"n_labelled": "all"})
        return FinetuneConfig.from_cell(values, data=".", domain=None, init=None, out=".")

    _check_run(cell_run, where, "finetune", cell)
    for name, source in (config.get("sources") or {}).items():
        if isinstance(source, Mapping) and isinstance(source.get("finetune"), Mapping):
            values = {k: v for k, v in source["finetune"].items() if k not in SET_BY_THE_GRID}
            run = functools.partial(FinetuneConfig.from_dict, {"data": ".", "out": ".", **values})
            _check_run(run, where, f"sources.{name}.finetune", cell)


def _check_run(build: Callable[[], Any], where: str, path: str, cell: str) -> None:
    """Build a FinetuneConfig, then its train and preprocess options and its model name, as a run does."""
    from ..data.preprocess import PreprocessConfig
    from ..models import get_model_spec
    from ..train.config import TrainConfig

    run = _call(build, where, path, cell)
    _call(lambda: TrainConfig.from_dict(dict(run.train)), where, f"{path}.train", cell)
    _call(lambda: PreprocessConfig.from_dict(dict(run.preprocess)), where, f"{path}.preprocess", cell)
    _call(lambda: get_model_spec(run.model), where, f"{path}.model", cell)


def _call(function: Callable[[], Any], where: str, path: str, cell: str) -> Any:
    try:
        return function()
    except ConfigError as err:
        raise ConfigError(f"{where}: {path + ' ' if path else ''}(cell {cell}): {err}") from err
    except (TypeError, ValueError) as err:  # a value of the wrong type deep inside a constructor
        raise ConfigError(f"{where}: {path + ' ' if path else ''}(cell {cell}): invalid value: {err}") from err


_VALUE_CHECKS: dict[str, Callable[[Mapping[str, Any], str, str], None]] = {
    "finetune": _check_finetune_kind,
    "teacher_student": _check_teacher_student_kind,
    "classification": _check_classification_kind,
}
