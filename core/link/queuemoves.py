"""Queue updates as moves: what the engine sends so that a client's positions stay exact, and how the
client applies it.  Standard library only; the engine (``core.engine.queuenews``) and the client
(``core.link.client``) share this module, so both read a ``queue`` message the same way.

A ``queue`` message (``queue_update``, read by ``queue_update_of``) carries ``positions`` ({job id:
position}, 0 = running) and ``shifts``, a list of ``[first, last, by]``: every job whose last-told
position p lies in ``[first, last]`` is now at ``p - by``.  The client applies the shifts to the
positions it was last told (all at once, from the old values), then the explicit positions.  In a
first-in-first-out queue all of a client's jobs move up by the number of jobs that left ahead of them,
so sorted by their last-told position the shift only grows and forms few runs: an update is as long as
the departures it reports (plus one), and the traffic of a draining queue grows linearly with its
length, every position exact after every update.
"""

from __future__ import annotations

from bisect import bisect_right

from .protocol import Message, MessageError, message

_GONE = object()    # a job the client may still hold but the queue no longer has: no run may cover it
_MIXED = object()   # jobs told the same position that moved differently: no run may cover them


def changes(told: dict[str, int], now: dict[str, int]) -> tuple[dict[str, int], list[list[int]]]:
    """What to send so that a client holding ``told`` ({job id: last-told position}) ends up holding
    ``now`` for every job of ``now``: (explicit positions, shifts).

    Jobs never told go explicitly.  The told ones, sorted by told position, are grouped into maximal
    runs of equal shift (told − now); a run's range never contains the told position of a job with
    another shift, of one that left the queue, or of two jobs told the same place that moved apart
    (those are sent explicitly).  Runs of shift 0 are not sent."""
    explicit = {j: p for j, p in now.items() if j not in told}
    at: dict[int, object] = {}          # told position -> its one shift, or _GONE / _MIXED
    for j, t in told.items():
        p = now.get(j)
        shift = _GONE if p is None else t - p
        seen = at.get(t, shift)
        at[t] = shift if seen == shift else (_GONE if _GONE in (seen, shift) else _MIXED)
    shifts: list[list[int]] = []
    run: list = []                      # [first, last, by] of the run being built
    for t in sorted(at):
        shift = at[t]
        if run and shift is not _GONE and shift is not _MIXED and shift == run[2]:
            run[1] = t
            continue
        if run and run[2] != 0:
            shifts.append(run)
        run = [t, t, shift] if isinstance(shift, int) else []
    if run and run[2] != 0:
        shifts.append(run)
    for j, t in told.items():          # the moved jobs of a place no run may cover
        if (at[t] is _MIXED or at[t] is _GONE) and j in now and now[j] != t:
            explicit[j] = now[j]
    return explicit, shifts


def applied(told: dict[str, int], positions: dict[str, int], shifts: list[list[int]]) -> dict[str, int]:
    """The positions a client holds after a ``queue`` message: each last-told position moved by the run
    that contains it (runs do not overlap; ``check_shifts``), then the explicit positions."""
    firsts = [s[0] for s in shifts]
    out = {}
    for j, t in told.items():
        i = bisect_right(firsts, t) - 1
        out[j] = t - shifts[i][2] if i >= 0 and t <= shifts[i][1] else t
    out.update(positions)
    return out


def check_shifts(shifts) -> list[list[int]]:
    """``shifts`` as sent, or ValueError naming what is wrong: a list of [first, last, by] whole numbers,
    first ≤ last, in increasing order without overlaps."""
    if not isinstance(shifts, list):
        raise ValueError("'shifts' must be a list of [first, last, by]")
    end = None
    for s in shifts:
        if not (isinstance(s, list) and len(s) == 3 and all(type(v) is int for v in s)):
            raise ValueError("each of 'shifts' must be [first, last, by], three whole numbers")
        if s[0] > s[1] or (end is not None and s[0] <= end):
            raise ValueError("'shifts' must be ranges in increasing order that do not overlap")
        end = s[1]
    return shifts


def queue_update(positions: dict[str, int], shifts: list[list[int]] | None = None, **fields) -> Message:
    """A ``queue`` message: explicit ``positions`` and, for a client that offered ``queue_shifts`` in its
    hello, the ``shifts`` of the positions it was last told.  An empty field is left out."""
    if shifts:
        fields["shifts"] = shifts
    if positions or not shifts:
        fields["positions"] = positions
    return message("queue", **fields)


def queue_update_of(msg: Message) -> tuple[dict[str, int], list[list[int]]]:
    """(positions, shifts) of a ``queue`` message (either may be left out); MessageError names the field
    that is wrong."""
    positions = msg.header.get("positions")
    positions = {} if positions is None else positions
    if not (isinstance(positions, dict)
            and all(isinstance(j, str) and type(p) is int and p >= 0 for j, p in positions.items())):
        raise MessageError("bad_message", "queue: 'positions' must map job ids to whole numbers ≥ 0",
                           parameter="positions")
    try:
        shifts = check_shifts(msg.header.get("shifts", []))
    except ValueError as e:
        raise MessageError("bad_message", f"queue: {e}", parameter="shifts") from None
    return positions, shifts
