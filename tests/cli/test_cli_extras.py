"""A missing optional package gives one line naming the module and the extra that installs it,
and exit 2, never a traceback (issue 42). Each module is hidden by `sys.modules[name] = None`
(its import then raises ModuleNotFoundError) and the command runs in process."""

from __future__ import annotations

import sys
import tomllib

import pytest

from cryptorl_jax.core.extras import BASE, EXTRAS, install_hint, missing_text


def _quick(repo_root) -> str:
    return str(repo_root / "configs" / "quick.yaml")


def test_the_extras_table_is_pyprojects(repo_root):
    """Every module of EXTRAS is a requirement of its extra in pyproject.toml, every module of
    BASE one of the base install's dependencies."""
    project = tomllib.loads((repo_root / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]

    def names(reqs: list[str]) -> set[str]:
        return {r.split("[")[0].split(">")[0].split("=")[0].split("<")[0].strip().lower()
                for r in reqs}

    for module, extra in EXTRAS.items():
        assert module.lower() in names(extras[extra]), (module, extra)
    for pip_name in BASE.values():
        assert pip_name.lower() in names(project["dependencies"]), pip_name


def test_the_cluster_message_is_the_common_one():
    """cluster.py spells the text out (it imports nothing from the package): the same words."""
    from cryptorl_jax.cluster import MISSING_RAY

    assert MISSING_RAY == missing_text("ray", "--executor ray")


def _one_line(capsys, module: str) -> str:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    assert f"{module} is not installed" in lines[0]
    assert install_hint(module) in lines[0]
    return lines[0]


@pytest.mark.parametrize("module,argv", [
    ("optuna", ["tune", "--config", "QUICK", "--trials", "1", "--out", "OUT"]),
    ("ray", ["wfo", "--config", "QUICK", "--executor", "ray", "--out", "OUT"]),
    ("lightgbm", ["wfo", "--config", "QUICK", "--set", "baselines.lightgbm=true",
                  "--out", "OUT"]),
    ("ccxt", ["download", "ccxt", "--out", "OUT/BTC_1h.csv.gz"]),
    ("yfinance", ["download", "yfinance", "--out-dir", "OUT"]),
])
def test_a_missing_package_is_one_line_and_exit_2(module, argv, monkeypatch, capsys, tmp_path,
                                                  repo_root):
    from cryptorl_jax.cli import main

    monkeypatch.setitem(sys.modules, module, None)
    out = tmp_path / "out"
    argv = [a.replace("QUICK", _quick(repo_root)).replace("OUT", str(out)) for a in argv]
    assert main(argv) == 2
    line = _one_line(capsys, module)
    assert line.startswith(f"{argv[0]}: error: ")
    if module in EXTRAS:
        extra = EXTRAS[module]
        assert f'pip install -e ".[{extra}]"' in line and f'"cryptorl_jax[{extra}]"' in line
    assert not out.exists()  # refused before anything was written


def test_a_module_missing_deep_inside_a_command_is_one_line(monkeypatch, capsys, tmp_path):
    """run_command turns any missing module of EXTRAS or BASE into the line, wherever the
    command imports it (here tensorboardX, when the training log opens)."""
    from cryptorl_jax.cli.common import run_command
    from cryptorl_jax.training.logging import ScalarLogger

    monkeypatch.setitem(sys.modules, "tensorboardX", None)
    assert run_command("wfo", lambda: ScalarLogger(tmp_path / "tb")) == 2
    line = _one_line(capsys, "tensorboardX")
    assert "cryptorl wfo needs it" in line and "output.tensorboard=false" in line


def test_any_other_missing_module_is_not_hidden():
    """A module the table does not know (a bug, a broken install) keeps its traceback."""
    from cryptorl_jax.cli.common import run_command

    def body():
        raise ModuleNotFoundError("No module named 'nowhere'", name="nowhere")

    with pytest.raises(ModuleNotFoundError, match="nowhere"):
        run_command("wfo", body)
