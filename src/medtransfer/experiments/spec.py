"""Grid files: a YAML description of an experiment grid and its expansion into cells (one run each).

A grid file is a small diff from defaults plus the axes to expand (nanoGPT-style configs, nnU-Net-style
deterministic run folders)::

    name: shift_demo                  # optional; defaults to the file's stem
    defaults:                         # nested dict copied into every cell's config
      kind: finetune                  # which cell function runs the cell (see medtransfer.experiments.kinds)
      data: {root: brainshift}
      finetune: {train: {epochs: 20, lr: 1.0e-3}}
      resources: {num_cpus: 1, num_gpus: 0}
    axes:
      target: [brain]                 # required: target task(s)
      source: [none, {name: mri_seg, checkpoint: ckpt/mri_seg.pt}]   # default [none]
      strategy: [scratch, full, "first_k:2"]                          # required
      budget: [3, {n_labelled: 1, every_kth_slice: 24}, all]         # default [all]
      seed: [0, 1]                                                    # default [0]
      domains: [siemens_15, ge_3]     # all ordered pairs a->b, a != b  (or: domain_pairs: ["a->b", ...])
    overrides:                        # applied in order to every cell whose axis values match (globs)
      - when: {strategy: "first_k:*"}
        set: {finetune: {train: {lr: 1.0e-2}}}
    exclude:                          # cells to drop, same matching rule
      - {source: none, strategy: "!scratch"}
    race: {metric: dice, margin: 0.01, alpha: 0.05}   # optional: how `grid run --race` races the arms
                                                      # (see medtransfer.experiments.racing)

Every key of ``defaults`` and of each override's ``set``, at every level, is checked when the file loads against
the keys the cell functions read (:mod:`medtransfer.experiments.config_keys`): a typo is an error naming the file,
the key path and the allowed keys, before any cell runs.  So are the values of every cell's config, with the checks
its cell function makes first (strategy name and parameters, model, optimizer, ...:
:func:`~medtransfer.experiments.config_keys.check_cell_values`), ``race.metric`` against the per-case metrics of the
grid's cell kinds, an override that gives some cells of a target (and domain pair, and seed) other held-out test
scans than the rest (:data:`TEST_SET_KEYS`: the arms are compared scan by scan), each ``kind`` (a registered
name), and every ``overrides[i].when`` and ``exclude[i]``: one that matches no cell is an error (a
typo in a pattern would otherwise be ignored without a word; a pattern close to none of its axis's values only
warns, since a generated grid may exclude what a smaller variant lacks).

Axis values become top-level keys of each cell's config: ``target`` (str), ``source`` ({name, checkpoint}),
``strategy`` (the string as written, e.g. ``"first_k:2"``), ``budget`` (a mapping with ``n_labelled`` and/or
``every_kth_slice``), ``seed`` (int), ``domain`` ({source, target}, only with a domain axis), and ``grid``
({name, cell_id}, and ``source_finetune``, the finetune values of the cell's source when the grid trains it:
``defaults.finetune`` with the source entry's over it, see :mod:`~medtransfer.experiments.sources`).  Matching
(``when`` / ``exclude``) compares glob patterns with the cell's axis labels (:attr:`Cell.axes`); a pattern starting
with ``!`` negates; a list of patterns matches if any does.

Run folder of a cell (DESIGN.md, with the domain pair inserted after the target when there is one)::

    <results>/<grid>/<target>/[<src_domain>_to_<tgt_domain>/]<source>__<strategy>/<budget>/seed<k>/

``<budget>`` is ``n<labelled>`` (``nall`` for every labelled case) followed by ``_k<every_kth_slice>`` when
slices are subsampled, e.g. ``n3``, ``n1_k24``.  Characters other than letters, digits and ``._+-`` become
``-`` (``first_k:2`` -> ``first_k-2``).  The cell id is the run folder relative to ``<results>/<grid>``.
"""

from __future__ import annotations

import copy
import difflib
import fnmatch
import itertools
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError, did_you_mean
from .config_keys import check_cell_config, check_cell_values
from .sources import check_datasets_inside, source_finetune, trained_entry

log = logging.getLogger(__name__)

TOP_KEYS = ("name", "description", "defaults", "axes", "overrides", "exclude", "race")
AXIS_KEYS = ("target", "source", "strategy", "budget", "seed", "domain_pairs", "domains")
MATCH_KEYS = ("target", "source", "strategy", "budget", "seed", "domain_pair")
BUDGET_KEYS = ("n_labelled", "every_kth_slice")
RESERVED_CONFIG_KEYS = ("target", "source", "strategy", "budget", "seed", "domain", "grid")


@dataclass(frozen=True)
class GridSpec:
    """A validated grid file.  Build it with :func:`load_grid` or :func:`parse_grid`.

    Attributes:
        name: grid name (the first folder under the results root).
        path: the grid file (used in error messages).
        defaults: config shared by every cell.
        axes: axis name -> tuple of normalised values (``domain_pair`` replaces ``domains``/``domain_pairs``).
        overrides: ``(when, set)`` pairs applied in order.
        exclude: match mappings of cells to drop.
        race: the ``race`` section (:class:`~medtransfer.experiments.racing.RaceSpec`), None when absent.
    """

    name: str
    path: str
    defaults: dict[str, Any]
    axes: dict[str, tuple]
    overrides: tuple[tuple[dict, dict], ...] = ()
    exclude: tuple[dict, ...] = ()
    race: Any = None


@dataclass(frozen=True)
class Cell:
    """One run of a grid: its id, resolved config and run folder.

    Attributes:
        id: run folder relative to ``<results>/<grid>`` (``/``-separated); unique within a grid.
        grid: grid name.
        axes: the cell's axis labels (str, except ``seed``: int), used for matching, tables and tracking.
        config: the resolved config (do not mutate; the runner writes it to ``config.yaml``).
        run_dir: the run folder.
        replaces: set by the runner for a rerun of a finished cell whose config changed (``grid run
            --rerun-changed``): ``run_dir`` is then a staging folder, moved onto ``replaces`` once the cell finished.

    Example:
        >>> spec = parse_grid({"axes": {"target": "brain", "strategy": ["full", "first_k:2"]}}, "g.yaml")
        >>> [c.id for c in expand_grid(spec, "results")]
        ['brain/none__full/nall/seed0', 'brain/none__first_k-2/nall/seed0']
    """

    id: str
    grid: str
    axes: dict[str, Any]
    config: dict[str, Any] = field(repr=False)
    run_dir: Path
    replaces: Path | None = field(default=None, repr=False, compare=False)

    def __hash__(self) -> int:  # the config dict is not hashable; the id identifies a cell within its grid
        return hash((self.grid, self.id))


def load_grid(path: str | Path) -> GridSpec:
    """Read and validate a grid file (``yaml.safe_load``, refusing a key given twice in one mapping).

    Raises:
        ConfigError: the file is missing, a folder, not UTF-8, not YAML, repeats a key in a mapping, empty, or not a
            valid grid (one line naming the file and the key).
    """
    from ..utils import read_yaml_mapping

    return parse_grid(
        read_yaml_mapping(path, what="grid settings (axes, defaults, ...)"), str(path), default_name=Path(path).stem
    )


def parse_grid(raw: Any, where: str, *, default_name: str = "grid") -> GridSpec:
    """Validate a grid given as a mapping (``where`` names its origin in error messages)."""
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}: a grid file must be a mapping with 'axes' (and 'defaults'), got {raw!r}")
    _check_keys(raw, TOP_KEYS, where, "top-level key")
    defaults = raw.get("defaults") or {}
    if not isinstance(defaults, Mapping):
        raise ConfigError(f"{where}: 'defaults' must be a mapping, got {defaults!r}")
    clash = sorted(set(defaults) & set(RESERVED_CONFIG_KEYS))
    if clash:
        raise ConfigError(f"{where}: defaults.{clash[0]} is set by the grid's axes; put it under 'axes' instead")
    check_cell_config(defaults, where, "defaults")
    _check_kind(defaults, where, "defaults")
    name = _label(str(raw.get("name") or default_name))
    axes = _parse_axes(raw.get("axes"), where)
    overrides = tuple(_parse_override(o, where, i) for i, o in enumerate(_as_list(raw.get("overrides"))))
    exclude = tuple(_parse_match(m, where, f"exclude[{i}]") for i, m in enumerate(_as_list(raw.get("exclude"))))
    race = _parse_race(raw.get("race"), where, axes["seed"]) if raw.get("race") is not None else None
    spec = GridSpec(name, where, copy.deepcopy(dict(defaults)), axes, overrides, exclude, race)
    _check_cells(spec)
    return spec


def _check_cells(spec: GridSpec) -> None:
    """Check what only the expanded cells show: patterns that match no cell, each cell's values, race.metric."""
    names = list(spec.axes)
    labels = [_axis_labels(dict(zip(names, c, strict=True))) for c in itertools.product(*spec.axes.values())]
    for i, match in enumerate(spec.exclude):
        if not any(_matches(match, axes) for axes in labels):
            _no_match(spec, f"exclude[{i}]", match, labels)
    kept = [axes for axes in labels if not any(_matches(m, axes) for m in spec.exclude)]
    for i, (when, _) in enumerate(spec.overrides):
        if not any(_matches(when, axes) for axes in kept):
            _no_match(spec, f"overrides[{i}].when", when, kept)
    cells = expand_grid(spec, ".")
    _check_same_test_scans(spec, cells)
    for cell in cells:
        check_datasets_inside(cell.config, spec.path)
    checked = set()
    for cell in cells:
        values = {k: v for k, v in cell.config.items() if k not in ("grid", "seed", "target", "domain")}
        key = repr(values)  # cells differing only in seed, target or domain pass the same checks
        if key not in checked:
            checked.add(key)
            check_cell_values(cell.config, spec.path)
    if spec.race is not None:
        from .racing import check_race_metric

        check_race_metric(spec.race.metric, [c.config.get("kind") for c in cells], spec.path)


# what decides a cell's held-out test scans besides its target and domain pair (experiments.cells)
TEST_SET_KEYS = ("finetune.split_seed", "finetune.test_fraction", "finetune.val_fraction", "finetune.target_domain")
TEST_SET_KEYS += ("eval.max_test_cases",)
SPLIT_KINDS = ("finetune", "teacher_student", "classification")  # the kinds that split their target this way


def _check_same_test_scans(spec: GridSpec, cells: list[Cell]) -> None:
    """Refuse an override that changes the held-out test scans of some cells of a target (and domain pair, and
    seed): the report and the race compare those cells' arms scan by scan, references included, so they must
    hold out the same scans (:data:`TEST_SET_KEYS`).  Different seeds may use different splits.

    Raises:
        ConfigError: ``<file>: overrides[i] sets <key> to <value> for cell <id>, but cell <id> of the same target
            [, domain pair] and seed holds <value>: ...``.
    """
    first: dict[tuple, tuple[Cell, dict[str, Any]]] = {}
    for cell in cells:
        if cell.config.get("kind") not in SPLIT_KINDS:
            continue
        values = {key: _test_set_value(cell.config, key) for key in TEST_SET_KEYS}
        group = (cell.axes["target"], cell.axes.get("domain_pair"), cell.axes["seed"])
        other, seen = first.setdefault(group, (cell, values))
        key = next((k for k in TEST_SET_KEYS if values[k] != seen[k]), None)
        if key is None:
            continue
        where, odd, usual = _override_setting(spec, cell, key), cell, other
        if where is None:  # the first cell of the group is the overridden one
            where, odd, usual = _override_setting(spec, other, key), other, cell
        pair = f", domain pair {cell.axes['domain_pair']}" if "domain_pair" in cell.axes else ""
        new, old = _test_set_value(odd.config, key), _test_set_value(usual.config, key)
        raise ConfigError(
            f"{spec.path}: {where or 'an override'} sets {key} to {new!r} for cell {odd.id}, but cell {usual.id} of "
            f"the same target{pair} and seed has {old!r}: arms compared scan by scan must hold out the same test "
            "scans; set it in defaults, or for every cell of that target (when: {target: ...})"
        )


def _test_set_value(config: Mapping[str, Any], key: str) -> Any:
    section, _, name = key.partition(".")
    if key == "finetune.target_domain" and config.get("domain"):
        return None  # the domain pair's target decides (experiments.cells.target_domain)
    value = (config.get(section) or {}).get(name)
    if value is None and section == "finetune":
        return _finetune_default(name)
    return value


def _finetune_default(name: str) -> Any:
    import dataclasses

    from ..finetune import FinetuneConfig

    return next(f.default for f in dataclasses.fields(FinetuneConfig) if f.name == name)


def _override_setting(spec: GridSpec, cell: Cell, key: str) -> str | None:
    """``overrides[i]``: the last override that sets ``key`` for ``cell`` (None when none does)."""
    section, _, name = key.partition(".")
    found = None
    for i, (when, updates) in enumerate(spec.overrides):
        if _matches(when, cell.axes) and isinstance(updates.get(section), Mapping) and name in updates[section]:
            found = f"overrides[{i}]"
    return found


def _no_match(spec: GridSpec, key: str, match: Mapping[str, tuple[str, ...]], labels: list[dict[str, Any]]) -> None:
    """A ``when`` / ``exclude`` that matches no cell: an error when a pattern looks like a typo of an axis value (or
    names an axis the grid lacks), else a warning (a generated grid may exclude what a small variant lacks).

    Raises:
        ConfigError: ``<file>: <key> matches no cell: <axis> '<pattern>' matches none of the grid's values (...);
            did you mean ...?``
    """
    for name, patterns in match.items():
        values = list(dict.fromkeys(str(axes[name]) for axes in labels if name in axes))
        if labels and not values:
            raise ConfigError(f"{spec.path}: {key} matches no cell: the grid has no {name} axis")
        if values and not any(_glob(v, p) for v in values for p in patterns):
            close = [c for p in patterns for c in difflib.get_close_matches(p.lstrip("!"), values, n=3, cutoff=0.6)]
            text = f"{spec.path}: {key} matches no cell: {name} {', '.join(patterns)!r} matches none of the grid's "
            text += f"values ({', '.join(values)})"
            if close:
                raise ConfigError(f"{text}; did you mean {' or '.join(repr(c) for c in dict.fromkeys(close))}?")
            log.warning("%s", text)
            return
    log.warning("%s: %s matches no cell of the grid (after exclude)", spec.path, key)


def _parse_race(raw: Any, where: str, seeds: tuple[int, ...]) -> Any:
    from .racing import parse_race_section

    return parse_race_section(raw, where, seeds)


def expand_grid(spec: GridSpec, results_root: str | Path) -> list[Cell]:
    """Expand a grid into its cells (cartesian product of the axes, minus excluded cells), in file order.

    Raises:
        ConfigError: two cells would share a run folder (e.g. ``first_k:2`` and ``first_k-2``).
    """
    root = Path(results_root) / spec.name
    names = list(spec.axes)
    cells: dict[str, Cell] = {}
    for combo in itertools.product(*(spec.axes[n] for n in names)):
        values = dict(zip(names, combo, strict=True))
        axes = _axis_labels(values)
        if any(_matches(m, axes) for m in spec.exclude):
            continue
        cell_id = _cell_id(axes)
        if cell_id in cells:
            raise ConfigError(f"{spec.path}: two cells share the run folder {cell_id!r}; make the axis values distinct")
        config = _resolve_config(spec, values, axes, cell_id)
        cells[cell_id] = Cell(cell_id, spec.name, axes, config, root / cell_id)
    return list(cells.values())


def select_cells(cells: list[Cell], pattern: str | None) -> list[Cell]:
    """Cells whose id matches the glob ``pattern`` (all cells when ``pattern`` is None).

    Raises:
        ConfigError: ``pattern`` matches none of ``cells`` (the message shows a few cell ids).
    """
    if not pattern:
        return list(cells)
    chosen = [c for c in cells if fnmatch.fnmatchcase(c.id, pattern) or fnmatch.fnmatchcase(c.id, f"{pattern}/*")]
    if cells and not chosen:
        shown = ", ".join(c.id for c in cells[:3]) + (", ..." if len(cells) > 3 else "")
        raise ConfigError(
            f"--only {pattern!r} matches none of the {len(cells)} cells of grid {cells[0].grid} (a glob on the cell "
            f"id, e.g. 'brain/*first_k*'); its cells are: {shown}"
        )
    return chosen


# --- axes -------------------------------------------------------------------------------------------------


def _parse_axes(raw: Any, where: str) -> dict[str, tuple]:
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}: 'axes' must be a mapping with at least 'target' and 'strategy', got {raw!r}")
    _check_keys(raw, AXIS_KEYS, where, "axis")
    for required in ("target", "strategy"):
        if not _as_list(raw.get(required)):
            raise ConfigError(f"{where}: axes.{required} is required (a list of at least one value)")
    if "domains" in raw and "domain_pairs" in raw:
        raise ConfigError(f"{where}: give either axes.domains or axes.domain_pairs, not both")
    axes = {
        "target": _parse_list(raw["target"], lambda v, i: _parse_name(v, where, f"axes.target[{i}]")),
        "source": _parse_list(raw.get("source", "none"), lambda v, i: _parse_source(v, where, i)),
        "strategy": _parse_list(raw["strategy"], lambda v, i: _parse_name(v, where, f"axes.strategy[{i}]")),
        "budget": _parse_list(raw.get("budget", "all"), lambda v, i: _parse_budget(v, where, i)),
        "seed": _parse_list(raw.get("seed", 0), lambda v, i: _parse_seed(v, where, i)),
    }
    _check_source_names(axes["source"], where)
    pairs = _parse_domains(raw, where)
    if pairs:  # right after the target: the order of the run folder's components
        axes = {"target": axes.pop("target"), "domain_pair": pairs, **axes}
    for name, values in axes.items():
        if not values:
            raise ConfigError(f"{where}: axes.{name} is empty; give at least one value or leave it out")
    return axes


def _parse_list(raw: Any, parse) -> tuple:
    return tuple(parse(value, i) for i, value in enumerate(_as_list(raw)))


def _parse_name(value: Any, where: str, key: str) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int) or str(value).strip() == "":
        raise ConfigError(f"{where}: {key} must be a non-empty name, got {value!r}")
    return str(value)


def _parse_source(value: Any, where: str, i: int) -> dict[str, Any]:
    key = f"axes.source[{i}]"
    if isinstance(value, Mapping):
        _check_keys(value, ("name", "checkpoint"), where, f"key of {key}")
        if "name" not in value and "checkpoint" not in value:
            raise ConfigError(f"{where}: {key} needs 'name' and/or 'checkpoint'")
        ckpt = value.get("checkpoint")
        name = value.get("name") or Path(str(ckpt)).name.split(".")[0]
        return {"name": _parse_name(name, where, f"{key}.name"), "checkpoint": None if ckpt is None else str(ckpt)}
    text = _parse_name(value, where, key)
    if "/" in text or text.endswith((".pt", ".pth", ".ckpt")):
        return {"name": Path(text).name.split(".")[0], "checkpoint": text}
    return {"name": text, "checkpoint": None}


def _check_source_names(sources: tuple[dict[str, Any], ...], where: str) -> None:
    """Two source checkpoints named alike (``zoo/model.v2.pt`` and ``zoo/model.v3.pt`` are both ``model``: the file
    name up to its first dot) would share their cells' run folders: ask for names.

    Raises:
        ConfigError: naming both entries and the mapping form that names them.
    """
    seen: dict[str, tuple[int, dict[str, Any]]] = {}
    for i, source in enumerate(sources):
        first = seen.setdefault(source["name"], (i, source))
        if first[1] is not source and first[1] != source:
            j, other = first
            raise ConfigError(
                f"{where}: axes.source[{j}] and axes.source[{i}] are both named {source['name']!r} (a checkpoint is "
                "named after its file name up to the first dot), so their cells would share run folders; name them, "
                f"e.g. {_named(other)} and {_named(source)}"
            )


def _named(source: dict[str, Any]) -> str:
    """``{name: ..., checkpoint: ...}`` with a name from the whole file name (``model.v2.pt`` -> ``model_v2``)."""
    if not source["checkpoint"]:
        return repr(source["name"])
    stem = Path(source["checkpoint"]).name.rsplit(".", 1)[0].replace(".", "_")
    return f"{{name: {_label(stem)}, checkpoint: {source['checkpoint']}}}"


def _parse_budget(value: Any, where: str, i: int) -> dict[str, Any]:
    key = f"axes.budget[{i}]"
    if value == "all" or _is_int(value):
        value = {"n_labelled": value}
    if not isinstance(value, Mapping) or not value:
        raise ConfigError(
            f"{where}: {key} must be an int (labelled cases), 'all', or a mapping with "
            f"{' and/or '.join(BUDGET_KEYS)}; got {value!r}"
        )
    _check_keys(value, BUDGET_KEYS, where, f"key of {key}")
    n = value.get("n_labelled", "all")
    if not (n == "all" or (_is_int(n) and n >= 1)):
        raise ConfigError(f"{where}: {key}.n_labelled must be an int >= 1 or 'all', got {n!r}")
    budget = {"n_labelled": n}
    if "every_kth_slice" in value:
        k = value["every_kth_slice"]
        if not (_is_int(k) and k >= 1):
            raise ConfigError(f"{where}: {key}.every_kth_slice must be an int >= 1, got {k!r}")
        budget["every_kth_slice"] = k
    return budget


def _parse_seed(value: Any, where: str, i: int) -> int:
    if not (_is_int(value) and value >= 0):
        raise ConfigError(f"{where}: axes.seed[{i}] must be an int >= 0, got {value!r}")
    return int(value)


def _parse_domains(raw: Mapping, where: str) -> tuple[tuple[str, str], ...]:
    if "domains" in raw:
        names = [_parse_name(v, where, f"axes.domains[{i}]") for i, v in enumerate(_as_list(raw["domains"]))]
        if len(set(names)) != len(names) or len(names) < 2:
            raise ConfigError(f"{where}: axes.domains must list at least two distinct domains, got {names}")
        return tuple((a, b) for a in names for b in names if a != b)
    return tuple(_parse_pair(v, where, i) for i, v in enumerate(_as_list(raw.get("domain_pairs"))))


def _parse_pair(value: Any, where: str, i: int) -> tuple[str, str]:
    key = f"axes.domain_pairs[{i}]"
    if isinstance(value, Mapping) and set(value) == {"source", "target"}:
        parts = [value["source"], value["target"]]
    elif isinstance(value, str) and value.count("->") == 1:
        parts = [p.strip() for p in value.split("->")]
    elif isinstance(value, list | tuple) and len(value) == 2:
        parts = list(value)
    else:
        raise ConfigError(f"{where}: {key} must be 'source->target', [source, target] or {{source, target}}")
    return _parse_name(parts[0], where, key), _parse_name(parts[1], where, key)


# --- overrides, matching and resolution -------------------------------------------------------------------


def _parse_override(raw: Any, where: str, i: int) -> tuple[dict, dict]:
    key = f"overrides[{i}]"
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}: {key} must be a mapping with 'when' and 'set', got {raw!r}")
    _check_keys(raw, ("when", "set"), where, f"key of {key}")
    if not isinstance(raw.get("set"), Mapping):
        raise ConfigError(f"{where}: {key}.set must be a mapping of config values, got {raw.get('set')!r}")
    clash = sorted(set(raw["set"]) & set(RESERVED_CONFIG_KEYS))
    if clash:
        raise ConfigError(f"{where}: {key}.set.{clash[0]} is an axis; overrides may not change axis values")
    check_cell_config(raw["set"], where, f"{key}.set")
    _check_kind(raw["set"], where, f"{key}.set")
    return _parse_match(raw.get("when") or {}, where, f"{key}.when"), copy.deepcopy(dict(raw["set"]))


def _check_kind(values: Mapping[str, Any], where: str, key: str) -> None:
    """``kind`` (when given) must name a registered cell kind: a string, not a list or a mapping.

    Raises:
        ConfigError: ``<file>: <key>.kind: ...`` naming the registered kinds.
    """
    if "kind" not in values:
        return
    from .kinds import list_cell_kinds

    kind, kinds = values["kind"], list_cell_kinds()
    if not isinstance(kind, str):
        raise ConfigError(f"{where}: {key}.kind must be the name of one cell kind ({', '.join(kinds)}), got {kind!r}")
    if kind not in kinds:
        raise ConfigError(f"{where}: {key}.kind: {did_you_mean(kind, kinds, what='cell kind')}")


def _parse_match(raw: Any, where: str, key: str) -> dict[str, tuple[str, ...]]:
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}: {key} must map axis names to glob patterns, got {raw!r}")
    _check_keys(raw, MATCH_KEYS, where, f"axis in {key}")
    return {name: tuple(str(p) for p in _as_list(pats)) for name, pats in raw.items()}


def _matches(match: Mapping[str, tuple[str, ...]], axes: Mapping[str, Any]) -> bool:
    return all(name in axes and any(_glob(str(axes[name]), p) for p in pats) for name, pats in match.items())


def _glob(value: str, pattern: str) -> bool:
    if pattern.startswith("!"):
        return not fnmatch.fnmatchcase(value, pattern[1:])
    return fnmatch.fnmatchcase(value, pattern)


def _axis_labels(values: Mapping[str, Any]) -> dict[str, Any]:
    labels = {
        "target": values["target"],
        "source": values["source"]["name"],
        "strategy": values["strategy"],
        "budget": budget_label(values["budget"]),
        "seed": values["seed"],
    }
    if "domain_pair" in values:
        labels["domain_pair"] = "->".join(values["domain_pair"])
    return labels


def budget_label(budget: Mapping[str, Any]) -> str:
    """Folder label of a label budget: ``{n_labelled: 3}`` -> ``n3``; ``{n_labelled: 1, every_kth_slice: 24}``
    -> ``n1_k24``; ``{n_labelled: 'all'}`` -> ``nall``."""
    label = f"n{budget.get('n_labelled', 'all')}"
    if budget.get("every_kth_slice") is not None:
        label += f"_k{budget['every_kth_slice']}"
    return label


def _cell_id(axes: Mapping[str, Any]) -> str:
    parts = [axes["target"]]
    if "domain_pair" in axes:
        parts.append(axes["domain_pair"].replace("->", "_to_"))
    parts += [f"{axes['source']}__{axes['strategy']}", axes["budget"], f"seed{axes['seed']}"]
    return "/".join(_label(str(p)) for p in parts)


def _resolve_config(spec: GridSpec, values: Mapping, axes: Mapping, cell_id: str) -> dict[str, Any]:
    config = copy.deepcopy(spec.defaults)
    for when, updates in spec.overrides:
        if _matches(when, axes):
            config = deep_merge(config, updates)
    config.update(copy.deepcopy({k: v for k, v in values.items() if k != "domain_pair"}))
    if "domain_pair" in values:
        config["domain"] = {"source": values["domain_pair"][0], "target": values["domain_pair"][1]}
    config["grid"] = {"name": spec.name, "cell_id": cell_id}
    entry = trained_entry(config)
    if entry is not None:  # what it trains with: the grid's defaults.finetune, never this cell's overrides
        config["grid"]["source_finetune"] = source_finetune(spec.defaults.get("finetune"), entry)
    return config


def deep_merge(base: Mapping[str, Any], updates: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``base`` with ``updates`` merged in recursively (mappings merge, everything else replaces)."""
    merged = copy.deepcopy(dict(base))
    for key, value in updates.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


# --- small helpers ----------------------------------------------------------------------------------------


def _check_keys(raw: Mapping, allowed: tuple[str, ...], where: str, what: str) -> None:
    for key in raw:
        if key not in allowed:
            raise ConfigError(f"{where}: {did_you_mean(str(key), allowed, what=what)}")


def _as_list(value: Any) -> list:
    if value is None:
        return []
    return list(value) if isinstance(value, list | tuple) else [value]


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def folder_label(text: str) -> str:
    """``text`` as one folder name inside its parent: characters other than letters, digits and ``._+-`` become
    ``-`` and leading dots too (never ``.``, ``..``, a hidden folder or a path), e.g. ``../x`` -> ``---x``."""
    return _label(text)


def _label(text: str) -> str:
    text = re.sub(r"[^A-Za-z0-9._+-]", "-", text.strip()) or "-"
    return re.sub(r"^\.+", lambda m: "-" * len(m.group()), text)  # never "." or "..": folders stay inside
