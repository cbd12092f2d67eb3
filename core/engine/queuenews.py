"""Queue positions for the clients: moves since the last update, coalesced.

Each client is told its own jobs' positions (0 = running).  A change of the queue only marks the news
as due; ``send_due`` (the heartbeat thread calls it) sends it at most every ``QUEUE_EVERY`` seconds.
A client that offered ``queue_shifts`` in its hello gets the moves since it was last told
(``core.link.queuemoves``): run-length shifts of its last-told positions plus the positions of new
jobs, every position exact after every update, each update as long as the departures it reports, so
the traffic of a draining queue grows linearly with its length.  An older client gets the positions
that moved enough (``worth_telling``): exact near the front, O(log n) updates per job further back.
"""

from __future__ import annotations

import threading

from ..link.queuemoves import changes, queue_update

QUEUE_EVERY = 0.25    # seconds between queue updates (changes only, coalesced)
EXACT_POSITIONS = 16  # positions up to this are always told exactly; further back, when they moved by 1/8


def worth_telling(told: int | None, position: int) -> bool:
    """Whether a job's new queue position is worth a message: it was never told, it is near the front
    (or running), or it moved by an eighth since it was last told.  As a queue of n jobs drains, each
    job is then told O(log n) times instead of n."""
    if told is None:
        return True
    if told == position:
        return False
    return position <= EXACT_POSITIONS or abs(told - position) * 8 >= told


class QueueNews:
    """What each client was last told; ``positions_by_owner``: the queue's snapshot function
    (``JobQueue.positions_by_owner``).  An owner's ``queue_shifts`` (set from its hello) chooses moves."""

    def __init__(self, positions_by_owner):
        self._snapshot = positions_by_owner
        self._lock = threading.Lock()
        self._told: dict[int, dict[str, int]] = {}
        self._due = False
        self._next = 0.0

    def accepted(self, owner, job_id: str, position: int) -> None:
        """``owner`` was told ``job_id``'s position in its ``accepted`` message."""
        with self._lock:
            self._told.setdefault(id(owner), {})[job_id] = position

    def changed(self) -> None:
        self._due = True

    def send_due(self, now: float) -> None:
        if not self._due or now < self._next:
            return
        self._due = False
        self._next = now + QUEUE_EVERY
        snapshot = self._snapshot()
        updates = []
        with self._lock:
            told, self._told = self._told, {}
            for key, (owner, positions) in snapshot.items():
                before = told.get(key, {})
                if getattr(owner, "queue_shifts", False):
                    explicit, shifts = changes(before, positions)
                    self._told[key] = positions
                else:
                    explicit = {j: p for j, p in positions.items() if worth_telling(before.get(j), p)}
                    shifts = []
                    self._told[key] = {**{j: before[j] for j in positions if j in before}, **explicit}
                if explicit or shifts:
                    updates.append((owner, explicit, shifts))
        for owner, explicit, shifts in updates:
            owner.send(queue_update(explicit, shifts))
