"""What a network client can make ``serve`` hold: the limits (``ServeLimits``), the memory budget for
pixels (``Budget``) and the pool of connections, waiting to authenticate or authenticated (``Pool``).
See ``serve``'s docstring for the rules."""

from __future__ import annotations

import ipaddress
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass, replace

from ..link.protocol import MessageError

GiB, MiB = 1 << 30, 1 << 20


def default_upload_bytes() -> int:
    """A quarter of the machine's memory, between 1 and 8 GiB (4 GiB when it cannot be read)."""
    try:
        ram = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 4 * GiB
    return max(GiB, min(8 * GiB, ram // 4))


@dataclass(frozen=True)
class ServeLimits:
    connections: int = 32                 # authenticated connections
    pre_auth: int = 64                    # connections still to authenticate, all addresses
    pre_auth_per_address: int = 8         # ... from one address (an IPv6 /64 counts as one)
    hello_timeout: float = 5.0            # accept → hello with the token (TLS handshake included)
    frame_idle: float = 30.0              # most seconds without a byte inside a frame
    frame_grace: float = 30.0             # a frame may take this long, plus its size at min_rate
    min_rate: int = 64 << 10              # bytes per second
    upload_bytes: int = 4 * GiB           # pixels held for jobs, all connections (received, queued, running)
    connection_upload_bytes: int = 2 * GiB  # ... one connection

    @classmethod
    def for_machine(cls, upload_mb: int | None = None, connections: int | None = None) -> ServeLimits:
        total = upload_mb * MiB if upload_mb else default_upload_bytes()
        limits = cls(upload_bytes=total, connection_upload_bytes=max(total // 2, MiB))
        return replace(limits, connections=connections) if connections else limits


def _size(n: int) -> str:
    return f"{n / GiB:.2f} GiB" if n >= GiB else f"{n / MiB:.1f} MiB"


# --- the memory budget for pixels ------------------------------------------------------------------

class Budget:
    """Bytes of payload the server holds for jobs, per connection and in all.  Thread-safe: holds are
    taken in the event loop and released by whichever thread ends the job."""

    def __init__(self, total: int, per_connection: int):
        self.total, self.per_connection = total, per_connection
        self.used = 0
        self.peak = 0
        self._by_owner: dict[int, int] = {}
        self._lock = threading.Lock()

    def reserve(self, owner, n: int, job_id: str | None) -> Hold:
        """A hold on ``n`` bytes for ``owner``, or MessageError (the payload is then skipped unread)."""
        if n > self.per_connection:
            raise MessageError("payload_too_large",
                               f"this job's pixels are {_size(n)}, more than this server takes from one connection "
                               f"({_size(self.per_connection)}): send a smaller image or selection, or ask the "
                               f"server's administrator to raise serve --max-upload-mb", job_id=job_id,
                               parameter="image")
        with self._lock:
            mine = self._by_owner.get(id(owner), 0)
            if mine + n > self.per_connection:
                raise MessageError("server_busy",
                                   f"this connection's queued jobs already hold {_size(mine)} of pixels; this job's "
                                   f"{_size(n)} would pass its {_size(self.per_connection)}: submit it when some of "
                                   f"them have finished", job_id=job_id, parameter="image")
            if self.used + n > self.total:
                raise MessageError("server_busy",
                                   f"the server holds {_size(self.used)} of other jobs' pixels and has no room for "
                                   f"this job's {_size(n)} now: try again when jobs have finished", job_id=job_id,
                                   parameter="image")
            self.used += n
            self.peak = max(self.peak, self.used)
            self._by_owner[id(owner)] = mine + n
        return Hold(self, owner, n)

    def give_back(self, owner, n: int) -> None:
        """(Hold.release calls it: once per hold.)"""
        with self._lock:
            self.used -= n
            left = self._by_owner.get(id(owner), 0) - n
            if left > 0:
                self._by_owner[id(owner)] = left
            else:
                self._by_owner.pop(id(owner), None)


class Hold:
    def __init__(self, budget: Budget, owner, n: int):
        self._budget, self._owner, self.bytes = budget, owner, n
        self._done = False
        self._lock = threading.Lock()

    def release(self) -> None:
        with self._lock:
            if self._done:
                return
            self._done = True
        self._budget.give_back(self._owner, self.bytes)


# --- who may connect -------------------------------------------------------------------------------

def address_key(host: str) -> str:
    """What counts as one address: an IPv4 address, or the /64 network of an IPv6 one."""
    try:
        ip = ipaddress.ip_address(host.split("%")[0])
    except ValueError:
        return host
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


class Pool:
    """Connections waiting to authenticate (oldest first, by address) and authenticated ones."""

    def __init__(self, limits: ServeLimits):
        self.limits = limits
        self.waiting: OrderedDict = OrderedDict()    # connection -> address key
        self.ready: set = set()
        self.evicted = 0
        self._lock = threading.Lock()

    def arrive(self, conn) -> list:
        """Admit a new connection to the waiting pool; returns the connections it pushes out."""
        out = []
        with self._lock:
            same = [c for c, k in self.waiting.items() if k == conn.key]
            if len(same) >= self.limits.pre_auth_per_address:
                out.append(same[0])
            elif len(self.waiting) >= self.limits.pre_auth:
                counts: dict[str, int] = {}
                for k in self.waiting.values():
                    counts[k] = counts.get(k, 0) + 1
                busiest = max(counts, key=lambda k: counts[k])   # ties: the first seen, i.e. the oldest
                out.append(next(c for c, k in self.waiting.items() if k == busiest))
            for c in out:
                del self.waiting[c]
            self.waiting[conn] = conn.key
            self.evicted += len(out)
        return out

    def authenticate(self, conn) -> str | None:
        """Move ``conn`` to the authenticated connections; the reason it cannot, or None."""
        with self._lock:
            if len(self.ready) >= self.limits.connections:
                return (f"the server already has {self.limits.connections} connections: try again when one has "
                        f"closed")
            self.waiting.pop(conn, None)
            self.ready.add(conn)
        return None

    def leave(self, conn) -> None:
        with self._lock:
            self.waiting.pop(conn, None)
            self.ready.discard(conn)

    def all(self) -> list:
        with self._lock:
            return [*self.waiting, *self.ready]
