"""Train/validation window-end ranges of a segment's train rows.

Windows: a window "ending at t" covers rows t-W+1..t. Of the train rows [train_start,
train_end), the last `val_fraction` form the validation range [val_start, train_end);
validation windows lie fully inside it, train windows end at most at val_start - W - 1, so W
rows separate the last train window from the first validation window, and no window ever
touches a row >= train_end. Rows before train_start serve as lookback only when the caller
says so (`lookback_ok=True`).
"""

from __future__ import annotations

import dataclasses
import math


@dataclasses.dataclass(frozen=True)
class WindowRanges:
    """Inclusive ranges of window END rows used for training and validation."""

    window: int
    train_first_end: int
    train_last_end: int
    val_first_end: int
    val_last_end: int

    @property
    def n_train(self) -> int:
        return self.train_last_end - self.train_first_end + 1

    @property
    def n_val(self) -> int:
        return self.val_last_end - self.val_first_end + 1

    @property
    def first_row(self) -> int:
        """The earliest row any window reads."""
        return self.train_first_end - self.window + 1

    @property
    def last_row(self) -> int:
        """The latest row any window reads."""
        return self.val_last_end


def window_ranges(train_start: int, train_end: int, window: int, val_fraction: float,
                  lookback_ok: bool = False) -> WindowRanges:
    """Train/validation window-end ranges for train rows [train_start, train_end) (see module)."""
    if not 0 <= train_start < train_end:
        raise ValueError(f"need 0 <= train_start < train_end, got train_start={train_start}, "
                         f"train_end={train_end}")
    n_rows = train_end - train_start
    n_val_rows = int(round(val_fraction * n_rows))
    val_start = train_end - n_val_rows
    val_first_end = val_start + window - 1
    first_end = max(train_start, window - 1) if lookback_ok else train_start + window - 1
    last_end = val_start - window - 1
    if val_first_end > train_end - 1:
        raise ValueError(
            f"too few rows for encoder pre-training: the validation range [{val_start}, "
            f"{train_end}) ({val_fraction:g} of {n_rows} train rows = {n_val_rows} rows) is "
            f"shorter than one window (W = {window})")
    if last_end < first_end:
        need = int(math.ceil((3 * window + 1) / (1 - val_fraction)))
        raise ValueError(
            f"too few rows for encoder pre-training: train rows [{train_start}, {train_end}) "
            f"({n_rows} rows) leave no train window of W = {window} rows before the "
            f"{window}-row gap and the {n_val_rows}-row validation range (about {need} rows "
            f"are needed)")
    return WindowRanges(window, first_end, last_end, val_first_end, train_end - 1)
