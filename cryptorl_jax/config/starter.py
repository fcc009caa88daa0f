"""The starter configs the package carries (`cryptorl init DIR`): configs/*.yaml, shipped as
package data in `cryptorl_jax/configs/` (pyproject's package-data; in a checkout that folder
links to the repository's configs/), written into a folder of the user's with their paths made
absolute, so that they run from any working directory.

`write_starter(dest, data_dir)` copies every bundled config into `dest` (comments kept;
`base: quick.yaml` resolves there as it does here) with `data.data_dir` pointed at `data_dir`,
`output.dir` at `dest/results` and a study's page (`study.doc`) at `dest/<name>`, then loads
each file to check that they took."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from cryptorl_jax.config.errors import ConfigError
from cryptorl_jax.config.load import load_config
from cryptorl_jax.core.names import BUNDLED_FILES

STARTER = "quick.yaml"  # the starter config; the others build on it or stand alone
# a checkout's bundled hourly data (data/SOURCES.md): beside the package, not inside it
CHECKOUT_DATA = Path(__file__).resolve().parents[2] / "data"

_DATA_DIR = re.compile(r"^(  data_dir:)[^\n#]*", re.MULTILINE)
_OUTPUT_DIR = re.compile(r"^(output:\n(?:  [^\n]*\n|\s*#[^\n]*\n)*?  dir:)[^\n#]*", re.MULTILINE)
_STUDY_DOC = re.compile(r"^(  doc:)([^\n#]*)", re.MULTILINE)
_TOP = re.compile(r"^(base|output):", re.MULTILINE)


def bundled_configs() -> dict[str, str]:
    """The package's configs: file name -> YAML text."""
    folder = resources.files("cryptorl_jax").joinpath("configs")
    if not folder.is_dir():
        raise FileNotFoundError("this installation of cryptorl_jax carries no configs "
                                "(cryptorl_jax/configs/ is missing)")
    return {p.name: p.read_text() for p in sorted(folder.iterdir(), key=lambda p: p.name)
            if p.name.endswith(".yaml")}


def bundled_data_dir() -> Path | None:
    """The bundled hourly data (BTC, ETH, SPY, DXY) of a source checkout or an editable
    install; None where the package was installed without it (a wheel carries no data)."""
    d = CHECKOUT_DATA
    return d if all((d / name).is_file() for name in BUNDLED_FILES.values()) else None


def _quoted(path: Path) -> str:
    return " " + json.dumps(str(path))  # a YAML double-quoted scalar


@dataclass(frozen=True)
class Starter:
    dest: Path
    files: list[Path]
    data_dir: Path
    results: Path


def starter_text(text: str, data_dir: Path, results: Path, dest: Path) -> str:
    """One config's text with its paths made absolute: data.data_dir, output.dir (added to a
    config with neither a base nor an output section) and study.doc (into `dest`). The keys a
    file does not set are left to its base."""
    text = _DATA_DIR.sub(lambda m: m.group(1) + _quoted(data_dir), text)
    text = _OUTPUT_DIR.sub(lambda m: m.group(1) + _quoted(results), text)
    if not _TOP.search(text):
        text = text.rstrip("\n") + f"\n\noutput:\n  dir:{_quoted(results)}\n"

    def doc(m: re.Match) -> str:
        value = m.group(2).strip().strip("'\"")
        if value in ("", "null", "~"):
            return m.group(0)
        return m.group(1) + _quoted(dest / Path(value).name)

    return _STUDY_DOC.sub(doc, text)


def write_starter(dest: str | Path, data_dir: str | Path, *, force: bool = False) -> Starter:
    """Write the bundled configs into `dest` (refusing to replace a file there unless
    `force`) and check that each loads with the paths it was given."""
    dest = Path(dest).absolute()
    data_dir, results = Path(data_dir).absolute(), dest / "results"
    configs = bundled_configs()
    if STARTER not in configs:
        raise FileNotFoundError(f"the package's configs lack {STARTER}")
    held = [name for name in configs if (dest / name).exists()]
    if held and not force:
        raise FileExistsError(f"{dest} already holds {', '.join(held)} (--force replaces them)")
    dest.mkdir(parents=True, exist_ok=True)
    files = []
    for name, text in configs.items():
        path = dest / name
        path.write_text(f"# cryptorl init: the package's configs/{name} with its paths made "
                        f"absolute\n{starter_text(text, data_dir, results, dest)}")
        files.append(path)
    for path in files:
        cfg = load_config(path)
        if Path(cfg.data.data_dir) != data_dir or Path(cfg.output.dir) != results:
            raise ConfigError("data.data_dir", f"the starter's paths did not take (data_dir "
                              f"{cfg.data.data_dir}, output.dir {cfg.output.dir})", str(path))
    return Starter(dest=dest, files=files, data_dir=data_dir, results=results)
