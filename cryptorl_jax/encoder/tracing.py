"""How often each of the encoder's jitted functions was traced (tests assert it compiles once).

Incremented inside the traced bodies: `epoch._optimizer_init`, `epoch._train_epoch`,
`epoch._evaluate` and `embed._embed_chunk`.
"""

from __future__ import annotations

from collections import Counter

TRACE_COUNTS: Counter[str] = Counter()
