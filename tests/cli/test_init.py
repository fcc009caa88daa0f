"""`cryptorl init DIR`: the package's configs (package data) written into a project folder with
absolute paths; `base: quick.yaml` resolves there; where the data is or how to download it; the
package build carries the configs; and, in a fresh process from an empty working directory,
init then `wfo --dry-run` of the starter config without importing JAX or writing anything."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from cryptorl_jax.cli import main
from cryptorl_jax.config import load_config
from cryptorl_jax.config import starter as starter_mod

CONFIGS = ["full.yaml", "long_history.yaml", "power.yaml", "quick.yaml", "study.yaml",
           "tune_quick.yaml"]


def test_init_writes_the_bundled_configs_with_absolute_paths(tmp_path, monkeypatch, capsys,
                                                            repo_root):
    monkeypatch.chdir(tmp_path)
    assert main(["init", "proj"]) == 0
    out = capsys.readouterr().out
    proj = tmp_path / "proj"
    assert sorted(p.name for p in proj.iterdir()) == CONFIGS
    assert f"the bundled data, {repo_root / 'data'}" in out
    assert f"cryptorl wfo --config {proj / 'quick.yaml'} --dry-run" in out
    for name in CONFIGS:
        cfg = load_config(proj / name)  # base: quick.yaml resolves beside it
        assert Path(cfg.data.data_dir) == repo_root / "data", name
        assert Path(cfg.output.dir) == proj / "results", name
    # the starter is the repository's quick.yaml but for its paths (comments kept)
    ours = load_config(proj / "quick.yaml")
    theirs = load_config(repo_root / "configs" / "quick.yaml",
                         [f"data.data_dir={repo_root / 'data'}", f"output.dir={proj / 'results'}"])
    assert ours == theirs
    assert "# A real but small walk-forward run" in (proj / "quick.yaml").read_text()
    assert load_config(proj / "study.yaml").study.doc == str(proj / "study.md")
    assert load_config(proj / "power.yaml").wfo.max_segments == 6  # its own keys over the base
    # from any working directory: the paths are absolute
    monkeypatch.chdir(repo_root.parent)
    assert load_config(proj / "tune_quick.yaml").data.data_dir == str(repo_root / "data")
    # a second init refuses to replace the configs; --force replaces them
    assert main(["init", str(proj)]) == 2
    assert "already holds" in capsys.readouterr().err
    assert main(["init", str(proj), "--force", "--data", str(tmp_path / "mine")]) == 0
    assert load_config(proj / "quick.yaml").data.data_dir == str(tmp_path / "mine")


def test_init_without_bundled_data_says_how_to_download(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(starter_mod, "CHECKOUT_DATA", tmp_path / "nowhere")
    assert main(["init", str(tmp_path / "p")]) == 0
    out = capsys.readouterr().out
    assert "no bundled data in this installation" in out
    assert f"cryptorl download ccxt --symbol BTC/USDT --out {tmp_path / 'p' / 'data'}" in out
    assert load_config(tmp_path / "p" / "quick.yaml").data.data_dir == str(tmp_path / "p" /
                                                                           "data")


def test_the_package_build_carries_the_configs(repo_root, tmp_path):
    """setuptools' build_py (what a wheel is made of) copies configs/*.yaml into the package
    as files (cryptorl_jax/configs is a link to configs/ in the checkout)."""
    pytest.importorskip("setuptools")
    src = tmp_path / "src"  # a copy of the project's sources: the build writes beside them
    skip = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(repo_root / "cryptorl_jax", src / "cryptorl_jax", symlinks=True, ignore=skip)
    shutil.copytree(repo_root / "configs", src / "configs")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(repo_root / name, src / name)
    assert (src / "cryptorl_jax" / "configs").is_symlink()
    res = subprocess.run([sys.executable, "-c", "from setuptools import setup; setup()", "-q",
                          "build_py", "-d", str(tmp_path / "build")], cwd=src,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    built = tmp_path / "build" / "cryptorl_jax" / "configs"
    assert sorted(p.name for p in built.iterdir()) == CONFIGS
    assert all(not p.is_symlink() for p in built.iterdir())
    for name in CONFIGS:
        assert (built / name).read_text() == (repo_root / "configs" / name).read_text()


def test_init_then_dry_run_in_a_fresh_process(tmp_path, repo_root):
    """A researcher's first commands, in a new process from an empty directory: init, then the
    dry runs of the starter, the power study and the study. They import no JAX and write
    nothing (not even the market cache)."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    code = textwrap.dedent(f"""
        import sys
        from pathlib import Path
        from cryptorl_jax.cli import main
        assert main(["init", "proj"]) == 0
        before = sorted(str(p) for p in Path(".").rglob("*"))
        assert main(["wfo", "--config", "proj/quick.yaml", "--dry-run"]) == 0
        assert main(["power", "--config", "proj/power.yaml", "--edge", "none", "--repeats", "1",
                     "--dry-run"]) == 0
        assert main(["study", "--config", "proj/study.yaml", "--dry-run"]) == 0
        assert sorted(str(p) for p in Path(".").rglob("*")) == before, "the dry run wrote"
        assert not Path({str(tmp_path / 'xdg')!r}).exists(), "the dry run cached the market"
        assert "jax" not in sys.modules, sorted(m for m in sys.modules if "jax" in m)[:5]
    """)
    env = {**__import__("os").environ, "XDG_CACHE_HOME": str(tmp_path / "xdg"),
           "PYTHONPATH": str(repo_root)}
    res = subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True,
                         timeout=600, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "run directory: " + str(cwd / "proj" / "results" / "quick") in res.stdout
    assert "segments: 3 of the 6 the data holds" in res.stdout
    assert "no recorded step rate on this machine" in res.stdout
    assert "power: 1 walk-forward run (families" in res.stdout
    assert "study: 3 walk-forward runs" in res.stdout
