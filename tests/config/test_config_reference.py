"""docs/config.md lists every config key and is exactly what scripts/config_reference.py writes.

When a test here fails, regenerate the page and review the diff:

    PYTHONPATH=. python scripts/config_reference.py

(a new field needs a docstring under it in cryptorl_jax/config/schema_*.py first: it is the
field's description on the page).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import re
from dataclasses import dataclass
from pathlib import Path
from typing import get_args, get_type_hints

import pytest

from cryptorl_jax.config import Config
from cryptorl_jax.training.spec import HYPER_KEYS

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "config.md"


@pytest.fixture(scope="module")
def reference():
    spec = importlib.util.spec_from_file_location("config_reference",
                                                  ROOT / "scripts" / "config_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _all_keys(cls: type = Config, prefix: str = "") -> list[str]:
    """Every field of every config dataclass as the page names it (walked here, not by the
    script): sections by dots, the entries of a list of mappings as `key[].field`."""
    out = []
    hints = get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name == "source":  # where the config came from, not a key
            continue
        tp, key = hints[f.name], prefix + f.name
        if dataclasses.is_dataclass(tp):
            out += _all_keys(tp, key + ".")
            continue
        out.append(key)
        entries = [a for a in get_args(tp) if dataclasses.is_dataclass(a)]
        for entry in entries:
            out += _all_keys(entry, key + "[].")
    return out


def _rows() -> dict[str, list[str]]:
    rows = {}
    for line in DOC.read_text().splitlines():
        m = re.match(r"^\| `([^`]+)` \|", line)
        if m:
            rows[m.group(1)] = [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]
    return rows


def test_every_field_has_a_row():
    rows = _rows()
    keys = _all_keys()
    assert len(keys) > 150
    missing = [k for k in keys if k not in rows]
    assert not missing, f"docs/config.md lacks {missing}: run python scripts/config_reference.py"
    assert sorted(rows) == sorted(keys)  # and lists nothing else


def test_the_page_is_what_the_script_writes(reference):
    assert DOC.read_text() == reference.render(), (
        "docs/config.md is stale: run python scripts/config_reference.py")
    assert reference.main(["--check"]) == 0


def test_dynamic_keys_are_the_traced_hyperparameters():
    """The marked keys are training.spec.HYPER_KEYS (declared by `hyper` on the fields), the
    two that hand-copied lists missed among them."""
    dynamic = [k for k, cells in _rows().items() if cells[3] == "yes"]
    assert dynamic == list(HYPER_KEYS)
    assert {"tqc.weight_decay", "train.obs_noise", "env.reward_scale"} <= set(dynamic)
    assert all(cells[3] == "" for k, cells in _rows().items() if k not in HYPER_KEYS)


def test_a_field_without_a_docstring_stops_the_script(reference):
    @dataclass(frozen=True)
    class Section:
        documented: int = 1
        """A documented field."""
        bare: int = 2

    with pytest.raises(SystemExit, match=r"Section\.bare \(x\.bare\) has no docstring"):
        reference._table(Section, "x.", set())


def test_check_fails_on_a_stale_page(reference, tmp_path, capsys):
    stale = tmp_path / "config.md"
    stale.write_text(reference.render().replace("| `tqc.gamma` |", "| `tqc.gama` |"))
    assert reference.main(["--check", "--out", str(stale)]) == 1
    assert "stale" in capsys.readouterr().err
