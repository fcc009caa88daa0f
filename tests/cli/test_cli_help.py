"""One help style for every subcommand (issue 42): an `examples:` block of `cryptorl NAME` lines,
a `packages:` block naming the extra it needs, a help text for every option, a description
without stray runs of spaces; and `cryptorl --version`."""

from __future__ import annotations

import argparse
import re
import subprocess

import pytest

from cryptorl_jax.cli import SUBCOMMANDS, main


def _parsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    """The parser and its sub-subcommands' parsers (download ccxt, bench env, ...)."""
    out = [parser]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                out += _parsers(sub)
    return out


def _help(name: str, monkeypatch, capsys) -> tuple[str, argparse.ArgumentParser]:
    seen = []
    format_help = argparse.ArgumentParser.format_help
    monkeypatch.setattr(argparse.ArgumentParser, "format_help",
                        lambda self: seen.append(self) or format_help(self))
    with pytest.raises(SystemExit) as exit_:
        main([name, "--help"])
    assert exit_.value.code == 0
    return capsys.readouterr().out, seen[-1]


@pytest.mark.parametrize("name", list(SUBCOMMANDS))
def test_every_subcommand_has_examples_packages_and_option_help(name, monkeypatch, capsys):
    text, parser = _help(name, monkeypatch, capsys)
    assert parser.prog == f"cryptorl {name}"
    block = text.split("\nexamples:\n", 1)
    assert len(block) == 2, f"cryptorl {name} --help has no examples: block"
    examples = block[1].split("\n\n", 1)[0].splitlines()
    assert examples and examples[0].startswith(f"  cryptorl {name} "), examples
    for line in examples:  # commands as a user types them (continuations indented)
        assert line.startswith(("  cryptorl ", "      ")), line
    assert "\npackages:\n  " in text
    for p in _parsers(parser):
        assert p.epilog and "examples:" in p.epilog, p.prog
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                continue
            assert action.help not in (None, "", argparse.SUPPRESS), \
                f"{p.prog}: {action.option_strings or action.dest} has no help text"
    # the description as written: no line glued to the next by a backslash in a docstring
    for line in (parser.description or "").splitlines():
        assert not re.search(r"\S {4,}\S", line), f"cryptorl {name}: stray spaces in {line!r}"


@pytest.mark.parametrize("name,extras", [("tune", ("tune", "cluster")),
                                          ("wfo", ("cluster", "baselines", "tensorboard")),
                                          ("power", ("cluster",)), ("bench", ("bench",))])
def test_the_help_names_the_extras_a_command_needs(name, extras, monkeypatch, capsys):
    text, _ = _help(name, monkeypatch, capsys)
    packages = text.split("\npackages:\n", 1)[1]
    for extra in extras:
        assert f'pip install -e ".[{extra}]"' in packages, (name, extra)


def test_the_common_arguments_take_verbose(monkeypatch, capsys):
    for name in ("wfo", "tune", "power", "study", "train", "evaluate", "paper"):
        text, _ = _help(name, monkeypatch, capsys)
        assert "-v, --verbose" in text, name


def test_version_names_the_package_commit_and_backend(capsys, repo_root):
    assert main(["--version"]) == 0
    out = capsys.readouterr().out
    first = out.splitlines()[0]
    assert first.startswith("cryptorl_jax ")
    sha = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=repo_root,
                         capture_output=True, text=True)
    if sha.returncode == 0:  # a checkout: its commit
        assert f", git {sha.stdout.strip()}" in first
    else:
        assert "git" not in first
    assert re.search(r"jax \d+\.\d+.*; backend cpu, \d+ device\(s\): ", out), out


def test_an_unknown_subcommand_still_says_so(capsys):
    assert main(["nonsense"]) == 2
    assert "unknown subcommand 'nonsense'" in capsys.readouterr().err
