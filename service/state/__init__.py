"""Per-symbol state the streaming pipeline keeps between batches (SPEC 1, 3, 7).

- `store`: the window store (`StateStore.apply`, snapshots, pattern cache, metrics).
- `changelog`: the bytes of the durable, compacted state topic.
- `batch`, `windows`: pure helpers (batch grouping, window bounds).
"""

from service.state.changelog import StateRecordError
from service.state.store import ApplyOutcome, StateStore

__all__ = ["ApplyOutcome", "StateRecordError", "StateStore"]
