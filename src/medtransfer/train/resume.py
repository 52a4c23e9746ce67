"""Resuming a run with other options is refused: the run folder must say how its weights were made.

``pretrain --resume`` and ``finetune --resume`` compare the options stored in the run with the ones asked for
now (:func:`check_same_options`).  Options that do not change what is learnt (where it runs, how it reports,
how often it saves) may differ.  The resume rules: docs/guide.md.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..errors import ConfigError

# where a run goes, where it runs, how it reports and how often it saves: none changes the weights
RUN_ONLY_OPTIONS = frozenset({"out", "device", "threads", "progress", "checkpoint_every_steps", "cache_dir"})
PATH_OPTIONS = frozenset({"data", "init"})


def changed_options(
    stored: dict[str, Any], wanted: dict[str, Any], ignore: frozenset[str] = RUN_ONLY_OPTIONS
) -> list[tuple[str, Any, Any]]:
    """``(key, stored value, wanted value)`` for every option both hold with different values.

    Nested sections are compared key by key (``train.lr``); keys named in ``ignore`` (at any depth) are skipped,
    and path options (``data``, ``init``) are compared as resolved paths.
    """
    old, new = _flat(_comparable(stored)), _flat(_comparable(wanted))
    return [
        (key, old[key], new[key])
        for key in sorted(new)
        if key in old and key.rpartition(".")[2] not in ignore and old[key] != new[key]
    ]


def check_same_options(where: str, stored: dict[str, Any], wanted: dict[str, Any], hint: str) -> None:
    """Raise a :class:`ConfigError` naming each option of ``wanted`` that differs from ``stored``.

    The message reads ``{where} with other options (key: old -> new; ...); {hint}``.
    """
    changed = changed_options(stored, wanted)
    if changed:
        what = "; ".join(_change(key, old, new) for key, old, new in changed)
        raise ConfigError(f"{where} with other options ({what}); {hint}")


def _change(key: str, old: Any, new: Any) -> str:
    """``key: old -> new``; two lists (case ids) as what was added and removed, not both lists in full."""
    if not (isinstance(old, list) and isinstance(new, list)):
        return f"{key}: {old!r} -> {new!r}"

    def some(values: list) -> str:
        shown = ", ".join(map(str, values[:5]))
        return shown + (f", ... ({len(values)} in all)" if len(values) > 5 else "")

    added, removed = [v for v in new if v not in old], [v for v in old if v not in new]
    parts = ([f"added {some(added)}"] if added else []) + ([f"removed {some(removed)}"] if removed else [])
    return f"{key}: {'; '.join(parts) if parts else 'the same items in another order'}"


def _comparable(options: dict[str, Any]) -> dict[str, Any]:
    """Options as plain JSON values (tuples become lists, enums strings), path options resolved."""
    plain = json.loads(json.dumps(options, default=str))
    for key in PATH_OPTIONS:
        if plain.get(key):
            plain[key] = str(Path(plain[key]).resolve())
    return plain


def _flat(options: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat = {}
    for key, value in options.items():
        if isinstance(value, dict) and value:
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat
