"""The on-disk layout of a walk-forward run: the one place that knows its file names.

    <output dir>/runs.jsonl                 the run registry (report.registry)
    <output dir>/<run_name>-eval/           what commands that only read the run write
                                            (evaluate, paper --status): beside it, never in it
    <output dir>/<run_name>/                RunDir
        config.yaml, config.digest          the run's identity (written first)
        run_info.json                       provenance of each invocation (provenance.py)
        oos_returns.parquet, metrics.csv, comparison.csv, baselines.csv,
        multiple_testing.csv, power.csv, summary.md, report.html,
        equity_curve.png, tearsheet.html    the aggregate report (report.write)
        segment_<k>_regimes.png             each segment's filtered regimes
        tensorboard/                        scalars per segment and the run's hparams
        locks/                              who is writing the run (core.runlock)
        batch_<a>-<b>/train/                a batch's training checkpoints (segments_per_batch)
        segment_<k>/                        SegmentDir
            transforms.json, scaler.json, regime_model.json, regime_stats.json
            baselines.json                  the fitted baselines' parameters (strategies.py)
            encoder/, encoder_report.json   the MAE (pretrained modes)
            train/                          TQC checkpoints (resume)
            agents/, train_history.json     the trained population and its curves
            oos.parquet, series_metrics.csv, metrics.json, regime_metrics.csv,
            stationarity.csv                the segment's OOS backtest
            DONE                            written last: the segment is finished, with the
                                            size and sha256 of every file above but train/
                                            (`SegmentDir.sealed_done`, `SegmentDir.damage`)
        segment_<k>.damaged-<time>/         a finished segment found damaged by --resume,
                                            moved aside (walkforward.writer.set_aside)

Nothing here imports JAX: a finished run is read (cryptorl_jax.report.runs) without it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptorl_jax.core.integrity import (
    FILES,
    is_sealed,
    manifest,
    manifest_problem,
    read_record,
    seal,
    seal_problem,
)
from cryptorl_jax.core.io import plain_json

DONE = "DONE"
REGISTRY = "runs.jsonl"
RECOVER = "run again with --resume"


class SegmentDamagedError(ValueError):
    """A finished segment whose DONE record is unreadable or whose files do not match it."""


@dataclass(frozen=True)
class SegmentDir:
    """segment_<k>/ of a run."""

    path: Path

    @classmethod
    def of(cls, run_dir: str | Path, index: int) -> SegmentDir:
        return cls(Path(run_dir) / f"segment_{index}")

    @property
    def index(self) -> int:
        return int(self.path.name.split("_", 1)[1])

    # fitted on the train rows
    @property
    def transforms(self) -> Path:
        return self.path / "transforms.json"

    @property
    def baselines(self) -> Path:  # the fitted baselines' parameters (backtest.strategies)
        return self.path / "baselines.json"

    @property
    def scaler(self) -> Path:
        return self.path / "scaler.json"

    @property
    def regime_model(self) -> Path:
        return self.path / "regime_model.json"

    @property
    def regime_stats(self) -> Path:
        return self.path / "regime_stats.json"

    @property
    def encoder(self) -> Path:
        return self.path / "encoder"

    @property
    def encoder_report(self) -> Path:
        return self.path / "encoder_report.json"

    @property
    def checkpoints(self) -> Path:
        return self.path / "train"

    @property
    def agents(self) -> Path:
        return self.path / "agents"

    @property
    def train_history(self) -> Path:
        return self.path / "train_history.json"

    # the OOS backtest
    @property
    def oos(self) -> Path:
        return self.path / "oos.parquet"

    @property
    def insample(self) -> Path:
        """The same backtest as oos.parquet over the segment's own train rows (the agents on
        the path they were trained on: the in-sample side of the memorisation check)."""
        return self.path / "insample.parquet"

    @property
    def series_metrics(self) -> Path:
        return self.path / "series_metrics.csv"

    @property
    def metrics(self) -> Path:
        return self.path / "metrics.json"

    @property
    def regime_metrics(self) -> Path:
        return self.path / "regime_metrics.csv"

    @property
    def stationarity(self) -> Path:
        return self.path / "stationarity.csv"

    @property
    def done(self) -> Path:
        return self.path / DONE

    def is_done(self) -> bool:
        return self.done.is_file()

    def done_meta(self) -> dict[str, Any]:
        """The DONE marker's record: rows, periods, timings, OOS Sharpe, env steps, the final
        entropy coefficient and policy entropy ("entropy"), the files it vouches for
        ("files"). An unreadable record raises `SegmentDamagedError`, naming the file."""
        record, problem = read_record(self.done)
        if problem is not None:
            raise SegmentDamagedError(self.damaged_message(f"{self.done}: {problem}"))
        return record

    def sealed_done(self, record: dict[str, Any]) -> dict[str, Any]:
        """The DONE record to write once every other file of the segment is written: `record`
        with the size and sha256 of each of them (its training checkpoints, train/, left
        out: they are scratch state, checked when restored) and the record's own sha256."""
        return seal(plain_json(record), manifest(self.path, skip=(DONE, "train")))

    def damage(self) -> str | None:
        """None when this finished segment is whole; else what is wrong, naming the file: its
        DONE record unreadable, or a file it vouches for missing, of another size or of other
        contents. A DONE record written before the checksums (no "files") is checked by
        loading: its JSON files parse and its Parquet files' footers read."""
        record, problem = read_record(self.done)
        if problem is None and is_sealed(record):
            problem = seal_problem(record)
            if problem is None:
                return manifest_problem(self.path, record[FILES])
        if problem is not None:
            return f"{self.done}: {problem}"
        return self._load_problem()

    def _load_problem(self) -> str | None:
        import pyarrow.parquet as pq

        for p in [*sorted(self.path.glob("*.json")), self.encoder / "meta.json"]:
            try:
                if p.is_file():
                    json.loads(p.read_bytes().decode())
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
                return f"{p} does not load ({type(exc).__name__}: {exc})"
        for p in sorted(self.path.glob("*.parquet")):
            try:
                pq.read_metadata(p)
            except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid is a ValueError
                return f"{p} does not load ({type(exc).__name__}: {exc})"
        return None

    def damaged_message(self, problem: str) -> str:
        """What a reader of a damaged finished segment says: the problem and how to recover."""
        return (f"segment {self.index} is damaged: {problem}; none of its numbers is read. "
                f"Recompute it: {RECOVER} (the folder is moved aside to "
                f"{self.path.name}.damaged-<time> and the segment computed again), or delete "
                f"{self.path} and {RECOVER}")

    def check(self) -> None:
        """Raise `SegmentDamagedError` (naming the file and the recovery) unless whole."""
        problem = self.damage()
        if problem is not None:
            raise SegmentDamagedError(self.damaged_message(problem))

    def damaged_path(self, stamp: str) -> Path:
        """segment_<k>.damaged-<stamp>/: where a damaged finished segment is moved aside (not a
        segment folder for `RunDir`: never read, never removed)."""
        return self.path.with_name(f"{self.path.name}.damaged-{stamp}")


@dataclass(frozen=True)
class RunDir:
    """<output dir>/<run_name>/."""

    path: Path

    def __init__(self, path: str | Path):
        object.__setattr__(self, "path", Path(path))

    def segment(self, index: int) -> SegmentDir:
        return SegmentDir.of(self.path, index)

    def finished_segments(self) -> list[int]:
        """Segment numbers with a DONE marker, in order."""
        out = []
        for p in self.path.glob("segment_*"):
            if p.is_dir() and (p / DONE).is_file():
                try:
                    out.append(int(p.name.split("_", 1)[1]))
                except ValueError:
                    continue
        return sorted(out)

    def segment_dirs(self) -> list[SegmentDir]:
        """Every segment_<k>/ folder, finished or not."""
        out = []
        for p in self.path.glob("segment_*"):
            if p.is_dir() and p.name.split("_", 1)[1].isdigit():
                out.append(SegmentDir(p))
        return sorted(out, key=lambda s: s.index)

    @property
    def registry(self) -> Path:
        return self.path.parent / REGISTRY

    @property
    def reading_dir(self) -> Path:
        """<run>-eval/ beside the run: the default home of what reading commands write
        (`cryptorl evaluate`, `cryptorl paper --status`), so that reading a run never changes
        its files (`--run .` included)."""
        path = self.path.resolve()
        return path.parent / f"{path.name}-eval"

    @property
    def config(self) -> Path:
        return self.path / "config.yaml"

    @property
    def config_digest(self) -> Path:
        return self.path / "config.digest"

    @property
    def run_info(self) -> Path:
        return self.path / "run_info.json"

    @property
    def oos(self) -> Path:
        return self.path / "oos_returns.parquet"

    @property
    def metrics(self) -> Path:
        return self.path / "metrics.csv"

    @property
    def diagnostics(self) -> Path:
        """Per segment and overall: in-sample vs OOS Sharpe, turnover (chosen vs mechanical),
        action dispersion, correlation with buy & hold, and the flags."""
        return self.path / "diagnostics.csv"

    @property
    def comparison(self) -> Path:
        return self.path / "comparison.csv"

    @property
    def baselines(self) -> Path:
        """The ensemble and each fitted baseline: Sharpe at 0x/1x/2x, PSR, timing null, the
        settings each segment chose (report.evidence)."""
        return self.path / "baselines.csv"

    @property
    def multiple_testing(self) -> Path:
        """SPA and StepM against buy & hold and against flat (backtest.inference)."""
        return self.path / "multiple_testing.csv"

    @property
    def power(self) -> Path:
        """Per segment and stitched: the minimum detectable Sharpe, underpowered flags."""
        return self.path / "power.csv"

    @property
    def summary(self) -> Path:
        return self.path / "summary.md"

    @property
    def report(self) -> Path:
        return self.path / "report.html"

    @property
    def equity_png(self) -> Path:
        return self.path / "equity_curve.png"

    @property
    def tearsheet(self) -> Path:
        return self.path / "tearsheet.html"

    @property
    def tensorboard(self) -> Path:
        return self.path / "tensorboard"

    def batch(self, first: int, last: int) -> Path:
        """batch_<first>-<last>/: the training checkpoints of segments first..last trained in
        one step (wfo.segments_per_batch > 1); each segment's files stay in segment_<k>/."""
        return self.path / f"batch_{first}-{last}"

    def batch_dirs(self) -> list[Path]:
        return sorted(p for p in self.path.glob("batch_*-*") if p.is_dir())

    def tensorboard_segment(self, index: int) -> Path:
        """tensorboard/segment_<k>/: the segment's training and pre-training curves."""
        return self.tensorboard / f"segment_{index}"

    def regimes_png(self, index: int) -> Path:
        return self.path / f"segment_{index}_regimes.png"

    REPORT_FILES = ("config.yaml", "oos_returns.parquet", "metrics.csv", "comparison.csv")

    def missing_for_load(self) -> list[str]:
        """What a finished run has and this folder lacks (empty: it loads)."""
        if not self.path.is_dir():
            return [f"the folder {self.path} itself"]
        missing = [f for f in self.REPORT_FILES if not (self.path / f).is_file()]
        if not self.finished_segments():
            missing.append("a finished segment (segment_<k>/DONE)")
        return missing
