"""``medtransfer strategies`` through ``cli.main``."""

from __future__ import annotations

import json

from medtransfer.cli import main
from medtransfer.transfer import list_strategies


def test_strategies_lists_every_strategy_with_parameters(capsys):
    assert main(["strategies"]) == 0
    out = capsys.readouterr().out
    for entry in list_strategies():
        assert f"{entry.name}: " in out
    assert "    k (int, default 1): number of stages" in out
    assert "decay (float, default 0.5)" in out


def test_strategies_json_and_single_name(capsys):
    assert main(["strategies", "--json", "hybrid_k"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows[0]["name"] == "hybrid_k"
    assert rows[0]["parameters"][0]["default"] == 2


def test_unknown_strategy_exits_2(capsys):
    assert main(["strategies", "frist_k"]) == 2
    assert "did you mean 'first_k'" in capsys.readouterr().err
