"""walkforward: the segment layout, the walk-forward run, evaluation and nested tuning."""

from cryptorl_jax.walkforward.segments import Segment, make_segments

__all__ = ["Segment", "make_segments"]
