"""The wire protocol between the editor's client and the engine process.  Standard library only.

A frame is a fixed 16-byte prefix, a JSON header, then zero or more binary payloads::

    prefix   magic b"\\x89DDP" | header length (u32, big-endian) | payload length (u64, big-endian)
    header   UTF-8 JSON object: {"type": ..., "payloads": [n1, n2, ...], ...message fields}
    payloads n1 + n2 + ... bytes, exactly the payload length of the prefix

Pixels travel as raw payloads beside the header that describes them (width, height, format), never
re-encoded.  The prefix alone delimits a frame, so a message whose header is not valid JSON, names an
unknown type or carries bad fields is skipped with an error reply and the stream stays usable
(``MessageError``).  A wrong magic or a length beyond the limits means the stream cannot be trusted
any more: the reader raises ``FramingError`` and the connection is closed after an error reply.

Both sides check ``PROTOCOL_VERSION`` in the hello exchange: the client speaks first
(``hello`` with its version and, in remote mode, the token), the engine answers with its own hello or
with a ``version_mismatch``/``unauthorized`` error and closes.
"""

from __future__ import annotations

import json
import re
import struct
from dataclasses import asdict, dataclass, field

from ..contract.events import Accepted, Capabilities, Failed, Finished, JobCancelled, Preview, Progress
from ..contract.jobs import JobRequest, JobResult
from ..contract.params import ValidationError, shown

PROTOCOL_VERSION = 1
MAGIC = b"\x89DDP"
PREFIX = struct.Struct("!4sIQ")

# Messages the client sends and messages the engine sends.
CLIENT_MESSAGES = ("hello", "submit", "cancel", "cancel_all", "capabilities", "heartbeat", "shutdown")
ENGINE_MESSAGES = ("hello", "capabilities", "accepted", "queue", "progress", "preview", "result", "error",
                   "cancelled", "model_status", "heartbeat", "bye")

# Stable error codes.  The first group comes from the engine, the second is made by the client.
ENGINE_ERRORS = (
    "protocol_error",        # framing broken (bad magic, oversized lengths): the connection closes
    "bad_message",           # a well-framed message with a bad header or bad fields
    "unknown_message",       # a message type the engine does not know
    "hello_required",        # anything but hello before the hello exchange
    "version_mismatch",      # protocol versions differ: the connection closes
    "unauthorized",          # remote mode: missing or wrong token: the connection closes
    "duplicate_job",         # a job id that is already queued or running
    "invalid_parameter",     # the request failed validation (``parameter`` names what)
    "model_missing", "unsafe_model_file", "model_error",
    "out_of_memory",         # even after unloading every cached model
    "job_failed",            # an unexpected error inside the job (details in the engine log)
    "engine_shutting_down",  # submitted while the engine stops
    "internal_error",        # handling a message failed inside the engine (details in its log)
    "payload_too_large",     # a shared engine: the job's pixels exceed what one connection may send
    "server_busy",           # a shared engine: no room now (pixels in memory, connections); try again later
    "too_slow",              # a shared engine: a frame stalled or crawled in: the connection closes
    # from a cluster gateway (python -m core serve --cluster; older clients show the message as it is)
    "queue_full",            # the artist already has as many jobs waiting as the gateway allows
    "worker_lost",           # the GPU worker running the job died, and again on the retry
    "cluster_unavailable",   # the Ray cluster behind the gateway did not answer
)
CLIENT_ERRORS = (
    "engine_died",           # the local engine exited or closed its pipes while the job ran
    "connection_lost",       # the remote engine's connection dropped while the job ran
    "engine_start_failed",   # the engine process could not be started or exited before its hello
    "engine_start_timeout",  # no hello within the start-up timeout
    "heartbeat_lost",        # the engine stopped sending anything (frozen): it was restarted
    "job_stuck",             # a running job made no progress within the job timeout
)
ERROR_CODES = ENGINE_ERRORS + CLIENT_ERRORS


@dataclass(frozen=True)
class Limits:
    """Largest frame a reader accepts.  A frame beyond them is refused before anything is allocated."""

    max_header: int = 1 << 20            # bytes of JSON
    max_payload: int = 4 << 30           # bytes of all payloads of one frame (16k² RGBA F16 = 2 GiB)
    max_payloads: int = 16


LIMITS = Limits()
# Before a remote client has authenticated: a small hello and nothing else.
PRE_AUTH_LIMITS = Limits(max_header=16 << 10, max_payload=0, max_payloads=0)


class ProtocolError(Exception):
    """Something the peer sent is not acceptable.  ``code`` is one of ``ERROR_CODES``."""

    fatal = False

    def __init__(self, code: str, message: str, *, job_id: str | None = None, parameter: str | None = None):
        super().__init__(message)
        self.code = code
        self.job_id = job_id
        self.parameter = parameter


class MessageError(ProtocolError):
    """A bad message inside an intact frame: answer with an error and keep reading."""


class FramingError(ProtocolError):
    """The byte stream itself is broken: answer with an error and close the connection."""

    fatal = True

    def __init__(self, message: str):
        super().__init__("protocol_error", message)


@dataclass
class Message:
    """One frame: its header fields (``type`` included) and its payloads.  ``hold``: what the receiver
    reserved for the payloads (a shared engine's memory budget), released when they are dropped."""

    header: dict
    payloads: list = field(default_factory=list)
    hold: object = field(default=None, repr=False, compare=False)

    @property
    def type(self) -> str:
        return self.header["type"]

    def get(self, key, default=None):
        return self.header.get(key, default)


def message(type_: str, payloads=(), **fields) -> Message:
    return Message({"type": type_, **fields}, list(payloads))


# --- encoding -----------------------------------------------------------------------------------

def _reject_constant(name):
    raise ValueError(f"{name} is not valid JSON")


def encode(msg: Message) -> list:
    """The frame as a list of byte chunks (prefix + header, then the payloads, uncopied)."""
    payloads = [p if isinstance(p, (bytes, bytearray, memoryview)) else bytes(p) for p in msg.payloads]
    sizes = [memoryview(p).nbytes for p in payloads]
    header = dict(msg.header)
    header["payloads"] = sizes
    raw = json.dumps(header, separators=(",", ":"), allow_nan=False, ensure_ascii=False).encode("utf-8")
    return [PREFIX.pack(MAGIC, len(raw), sum(sizes)) + raw, *payloads]


def encode_bytes(msg: Message) -> bytes:
    return b"".join(bytes(c) for c in encode(msg))


# --- decoding -----------------------------------------------------------------------------------

def parse_prefix(prefix: bytes, limits: Limits = LIMITS) -> tuple[int, int]:
    """(header length, payload length) of a frame, or FramingError."""
    magic, header_len, payload_len = PREFIX.unpack(prefix)
    if magic != MAGIC:
        raise FramingError(f"not a Diffusion Dock frame (magic {magic!r}, expected {MAGIC!r})")
    if header_len == 0:
        raise FramingError("empty frame header")
    if header_len > limits.max_header:
        raise FramingError(f"frame header of {header_len} bytes is over the limit of {limits.max_header}")
    if payload_len > limits.max_payload:
        raise FramingError(f"frame payload of {payload_len} bytes is over the limit of {limits.max_payload}")
    return header_len, payload_len


def parse_header(raw: bytes, payload_len: int, limits: Limits = LIMITS) -> tuple[dict, list[int]]:
    """The header object and the payload sizes it lists, or MessageError (the frame is still intact)."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise MessageError("bad_message", f"frame header must be UTF-8 text (byte {e.start} is not)") from None
    try:
        header = json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as e:
        raise MessageError("bad_message", f"frame header must be one JSON object (invalid JSON at character "
                                          f"{e.pos})") from None
    except (ValueError, RecursionError):
        raise MessageError("bad_message", "frame header must be one JSON object (numbers finite, nesting "
                                          "shallow)") from None
    if not isinstance(header, dict):
        raise MessageError("bad_message", f"frame header must be a JSON object, got {shown(header)}")
    kind = header.get("type")
    if not isinstance(kind, str) or not kind:
        raise MessageError("bad_message", f"frame header: 'type' must be the message type as text, "
                                          f"got {shown(kind)}")
    sizes = header.pop("payloads", [])
    if (not isinstance(sizes, list) or len(sizes) > limits.max_payloads
            or not all(type(s) is int and s >= 0 for s in sizes)):
        raise MessageError("bad_message", f"frame header: 'payloads' must list at most {limits.max_payloads} "
                                          f"byte counts")
    if sum(sizes) != payload_len:
        raise MessageError("bad_message", f"frame header: 'payloads' adds up to {sum(sizes)} bytes, the frame "
                                          f"carries {payload_len}")
    return header, sizes


def read_message(read, limits: Limits = LIMITS, admit=None) -> Message | None:
    """Read one frame with ``read(n)`` (a blocking file-like read).  None at a clean end of stream.

    ``admit(header, sizes)``, if given, is called before the payloads are read; a MessageError from it
    skips them unread.  Raises FramingError (close the connection) or MessageError (the frame was
    consumed; carry on).
    """
    prefix = _read_exactly(read, PREFIX.size, allow_eof=True)
    if prefix is None:
        return None
    header_len, payload_len = parse_prefix(prefix, limits)
    raw = _read_exactly(read, header_len)
    try:
        header, sizes = parse_header(raw, payload_len, limits)
        if admit is not None:
            admit(header, sizes)
    except MessageError:
        _discard(read, payload_len)
        raise
    return Message(header, [_read_exactly(read, n) for n in sizes])


async def read_message_async(reader, limits: Limits = LIMITS, prefix: bytes | None = None) -> Message | None:
    """``read_message`` for an ``asyncio.StreamReader`` (``prefix``: the frame's prefix, already read)."""
    import asyncio

    if prefix is None:
        try:
            prefix = await reader.readexactly(PREFIX.size)
        except asyncio.IncompleteReadError as e:
            if not e.partial:
                return None
            raise FramingError("stream ended inside a frame prefix") from None
    header_len, payload_len = parse_prefix(prefix, limits)
    try:
        raw = await reader.readexactly(header_len)
        try:
            header, sizes = parse_header(raw, payload_len, limits)
        except MessageError:
            left = payload_len
            while left:
                chunk = await reader.read(min(left, 1 << 20))
                if not chunk:
                    raise asyncio.IncompleteReadError(b"", left) from None
                left -= len(chunk)
            raise
        payloads = [await _read_payload(reader, n) for n in sizes]
    except asyncio.IncompleteReadError:
        raise FramingError("stream ended inside a frame") from None
    return Message(header, payloads)


PAYLOAD_CHUNK = 1 << 20


async def _read_payload(reader, n: int):
    """``n`` bytes from an ``asyncio.StreamReader``.  A large payload (a 4096² F32 layer is 268 MB) is
    read a megabyte at a time into one bytearray, which is returned as it is: ``readexactly`` would
    grow the stream's buffer to the whole payload and copy it out in one go, blocking the event loop
    (the editor's UI) for hundreds of milliseconds."""
    import asyncio

    if n <= PAYLOAD_CHUNK:
        return await reader.readexactly(n)
    buf = bytearray()   # grown, not preallocated: bytearray(n) would zero all n bytes in one go
    while len(buf) < n:
        chunk = await reader.read(min(PAYLOAD_CHUNK, n - len(buf)))
        if not chunk:
            raise asyncio.IncompleteReadError(b"", n - len(buf))
        buf += chunk
        await asyncio.sleep(0)   # read() returns at once while data is buffered: let the UI breathe
    return buf


async def skip_to_frame_async(reader, limit: int = 1 << 16) -> tuple[bytes, bytes | None]:
    """(bytes before the first frame, that frame's prefix or None at end of stream).

    Used once, before the engine's hello: text that a misbehaving interpreter start-up wrote to
    stdout before the engine took it over is skipped (and logged) instead of breaking the stream."""
    import asyncio

    try:
        data = await reader.readuntil(MAGIC)
    except asyncio.IncompleteReadError as e:
        return e.partial, None
    except asyncio.LimitOverrunError:
        raise FramingError(f"no frame in the first {limit} bytes") from None
    junk = data[: -len(MAGIC)]
    if len(junk) > limit:
        raise FramingError(f"no frame in the first {limit} bytes")
    try:
        rest = await reader.readexactly(PREFIX.size - len(MAGIC))
    except asyncio.IncompleteReadError:
        raise FramingError("stream ended inside a frame prefix") from None
    return junk, MAGIC + rest


def _read_exactly(read, n: int, allow_eof: bool = False):
    if n == 0:
        return b""
    data = read(n)
    if data is None:
        data = b""
    if len(data) == n:
        return data
    chunks, got = [data], len(data)
    while got < n:
        more = read(n - got)
        if not more:
            break
        chunks.append(more)
        got += len(more)
    if got == 0 and allow_eof:
        return None
    if got < n:
        raise FramingError(f"stream ended inside a frame ({got} of {n} bytes)")
    return b"".join(chunks)


def _discard(read, n: int) -> None:
    while n > 0:
        chunk = read(min(n, 1 << 20))
        if not chunk:
            raise FramingError("stream ended inside a frame's payloads")
        n -= len(chunk)


# --- typed messages ---------------------------------------------------------------------------

_KINDS = {int: "a whole number", str: "text", dict: "an object", list: "a list", bool: "true or false"}


def _field(msg: Message, name: str, kind, *, optional: bool = False):
    value = msg.header.get(name)
    if value is None and optional:
        return None
    if kind is int and type(value) is not int or kind is not int and not isinstance(value, kind):
        what = _KINDS.get(kind, "another kind of value")
        raise MessageError("bad_message", f"{shown(msg.type)}: {name!r} must be {what}, got {shown(value)}",
                           job_id=job_id_or_none(msg), parameter=name)
    return value


# Job ids: what a client may choose.  Letters, digits and - _ . : only (they go into log lines and back
# to the client verbatim), 1–128 characters.
JOB_ID = re.compile(r"[A-Za-z0-9_.:-]{1,128}\Z")
JOB_ID_RULE = "'job_id' must be 1–128 characters of letters, digits and - _ . :"


def valid_job_id(job_id) -> bool:
    return isinstance(job_id, str) and JOB_ID.match(job_id) is not None


def job_id_or_none(msg) -> str | None:
    """The message's (or header's) job id if it is a valid one, else None."""
    j = (msg.header if isinstance(msg, Message) else msg).get("job_id")
    return j if valid_job_id(j) else None



def job_id_of(msg: Message) -> str:
    job_id = job_id_or_none(msg)
    if job_id is None:
        raise MessageError("bad_message", f"{shown(msg.type)}: {JOB_ID_RULE}, got {shown(msg.header.get('job_id'))}",
                           parameter="job_id")
    return job_id


def hello(**fields) -> Message:
    return message("hello", protocol=PROTOCOL_VERSION, **fields)


def check_hello(msg: Message) -> int:
    """The peer's protocol version, or ProtocolError ``version_mismatch``."""
    version = msg.header.get("protocol")
    if type(version) is not int:
        raise MessageError("version_mismatch", f"hello: 'protocol' must be the protocol version, a whole number, "
                                               f"got {shown(version)}")
    if version != PROTOCOL_VERSION:
        raise MessageError("version_mismatch",
                           f"protocol version {version} is not supported (this side speaks {PROTOCOL_VERSION}): "
                           f"update the engine and the plugin together")
    return version


def error(code: str, text: str, *, job_id: str | None = None, parameter: str | None = None,
          fatal: bool = False) -> Message:
    fields = {"code": code, "message": text}
    if job_id is not None:
        fields["job_id"] = job_id
    if parameter is not None:
        fields["parameter"] = parameter
    if fatal:
        fields["fatal"] = True
    return message("error", **fields)


def submit(job_id: str, req: JobRequest, *, previews: bool = True) -> Message:
    """A job request with its pixel buffers as raw payloads (order named by ``buffers``)."""
    d = req.to_dict()
    names = list(d["buffers"])
    bufs = req.buffers()
    return message("submit", [bufs[n].data for n in names], job_id=job_id, request=d, buffers=names,
                   previews=bool(previews))


def request_of(msg: Message) -> JobRequest:
    """The JobRequest of a submit message (ValidationError for bad request fields)."""
    d = _field(msg, "request", dict)
    names = msg.header.get("buffers", [])
    if (not isinstance(names, list) or len(names) != len(msg.payloads)
            or not all(isinstance(n, str) for n in names) or len(set(names)) != len(names)):
        raise MessageError("bad_message", "submit: 'buffers' must name each payload once, in order",
                           job_id=job_id_or_none(msg), parameter="buffers")
    described = d.get("buffers")
    if described is None:
        described = {}
    if not isinstance(described, dict) or set(described) != set(names):
        raise ValidationError("buffers", "request.buffers must describe exactly the frame's payloads "
                                         f"({', '.join(names) or 'none'})")
    return JobRequest.from_dict(d, dict(zip(names, msg.payloads)))


def result(job_id: str, res: JobResult) -> Message:
    return message("result", [p.image.data for p in res.patches], job_id=job_id, result=res.header())


def result_of(msg: Message) -> JobResult:
    h = _field(msg, "result", dict)
    try:
        return JobResult.from_header(h, list(msg.payloads))
    except ValidationError as e:
        raise MessageError("bad_message", f"result: {e}", job_id=job_id_or_none(msg)) from None
    except (TypeError, ValueError, KeyError, AttributeError):
        raise MessageError("bad_message", "result: the result's description does not follow the protocol",
                           job_id=job_id_or_none(msg)) from None


def preview(job_id: str, width: int, height: int, data) -> Message:
    return message("preview", [data], job_id=job_id, width=int(width), height=int(height), format="RGB_U8")


def capabilities(caps: Capabilities) -> Message:
    return message("capabilities", capabilities=asdict(caps))


def capabilities_of(msg: Message) -> Capabilities:
    d = _field(msg, "capabilities", dict)
    try:
        d = dict(d)
        d["models"] = tuple(d.get("models") or ())
        d["modes"] = tuple(d.get("modes") or ())
        return Capabilities(**d)
    except TypeError:
        raise MessageError("bad_message", "capabilities: the fields do not follow the protocol") from None


def event_of(msg: Message):
    """The job event an engine message stands for (Accepted, Progress, Preview, Finished, Failed,
    JobCancelled), or None for messages that are not about one job."""
    kind = msg.type
    if kind not in ("accepted", "progress", "preview", "result", "error", "cancelled"):
        return None
    if kind == "error" and job_id_or_none(msg) is None:
        return None
    job_id = job_id_of(msg)
    if kind == "accepted":
        return Accepted(job_id, _field(msg, "position", int))
    if kind == "progress":
        return Progress(job_id, _field(msg, "step", int), _field(msg, "total", int), _field(msg, "phase", str))
    if kind == "preview":
        w, h = _field(msg, "width", int), _field(msg, "height", int)
        if len(msg.payloads) != 1 or len(msg.payloads[0]) != w * h * 3:
            raise MessageError("bad_message", "preview: payload must be width × height × 3 bytes", job_id=job_id)
        return Preview(job_id, w, h, msg.payloads[0])
    if kind == "result":
        return Finished(job_id, result_of(msg))
    if kind == "cancelled":
        return JobCancelled(job_id)
    return Failed(job_id, _field(msg, "code", str), _field(msg, "message", str),
                  _field(msg, "parameter", str, optional=True))
