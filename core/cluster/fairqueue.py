"""The gateway's queue: round robin across artists, first in first out within one artist.

One artist's fifty jobs do not starve another's single job: artists stand in a ring in the order they
first queued, and the next job handed to the cluster comes from the artist after the one served last.
With A's jobs running and queued when B and C queue one each, the order is B, C, A, A, ...  An artist
with ``limit`` jobs waiting is refused (``QueueFull``).  Not thread-safe by itself: the gateway holds its
lock around every call.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable


class QueueFull(Exception):
    pass


class FairQueue:
    def __init__(self, limit: int):
        self.limit = limit
        self._lanes: dict[str, deque] = {}    # artist -> waiting items
        self._ring: list[str] = []            # artists with waiting items, in the order they joined
        self._next = 0                        # index in the ring of the artist served next

    def __len__(self) -> int:
        return sum(len(q) for q in self._lanes.values())

    def queued(self, artist: str) -> int:
        lane = self._lanes.get(artist)
        return len(lane) if lane else 0

    def push(self, artist: str, item: Hashable) -> None:
        lane = self._lanes.get(artist)
        if lane is not None and len(lane) >= self.limit:
            raise QueueFull(f"{artist} has {len(lane)} jobs waiting, the limit is {self.limit}: "
                            f"wait for one to start, or cancel one")
        if lane is None:
            lane = self._lanes[artist] = deque()
            self._ring.append(artist)
        lane.append(item)

    def remove(self, artist: str, item: Hashable) -> bool:
        lane = self._lanes.get(artist)
        if not lane or item not in lane:
            return False
        lane.remove(item)
        if not lane:
            self._leave(self._ring.index(artist))
        return True

    def pop(self):
        """(artist, item) of the next job to run, or None when nothing waits."""
        if not self._ring:
            return None
        i = self._next if self._next < len(self._ring) else 0
        artist = self._ring[i]
        lane = self._lanes[artist]
        item = lane.popleft()
        self._next = i + 1
        if not lane:
            self._leave(i)
        return artist, item

    def order(self) -> list[tuple[str, Hashable]]:
        """Every waiting (artist, item) in the order ``pop`` would give them."""
        copy = self.copy()
        out = []
        while (nxt := copy.pop()) is not None:
            out.append(nxt)
        return out

    def copy(self) -> FairQueue:
        other = FairQueue(self.limit)
        other.restore({a: deque(q) for a, q in self._lanes.items()}, list(self._ring), self._next)
        return other

    def restore(self, lanes: dict, ring: list, nxt: int) -> None:
        self._lanes, self._ring, self._next = lanes, ring, nxt

    def positions(self) -> dict[Hashable, int]:
        """item -> 1-based place in line."""
        return {item: i for i, (_, item) in enumerate(self.order(), start=1)}

    def _leave(self, i: int) -> None:
        """The artist at ring index ``i`` has nothing left waiting: out of the ring, the turn kept."""
        del self._lanes[self._ring[i]]
        self._ring.pop(i)
        if i < self._next:
            self._next -= 1
