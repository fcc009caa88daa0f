"""walkforward: the segments, the walk-forward run (runner, writer, driver) and evaluation."""

from cryptorl_jax.walkforward.segments import Segment, make_segments

__all__ = ["Segment", "make_segments"]
