"""What an engine checks about a client's frame between its header and its payloads."""

from __future__ import annotations

from ..contract.jobs import check_buffer_header
from ..contract.params import ValidationError, shown
from ..link.protocol import MessageError, job_id_or_none


def check_declared(header: dict, sizes: list[int]) -> None:
    """What an engine checks about a client's frame before it reads the payloads: only ``submit``
    carries any, and each one's size must be what the request's own description of that buffer
    (width × height × the format's bytes per pixel) says.  MessageError otherwise (the payloads are then
    skipped unread).  A payload moved to shared memory (``bulk``) travels as 0 bytes and is checked
    when it is taken."""
    if not any(sizes):    # nothing to read: the message itself is checked when it is handled
        return
    kind = header.get("type")
    if kind != "submit":
        raise MessageError("bad_message", f"{shown(kind)} messages carry no payloads, got {len(sizes)}")
    job_id = job_id_or_none(header)
    names = header.get("buffers")
    if (not isinstance(names, list) or len(names) != len(sizes) or not all(isinstance(n, str) for n in names)
            or len(set(names)) != len(names)):
        raise MessageError("bad_message", "submit: 'buffers' must name each payload once, in order",
                           job_id=job_id, parameter="buffers")
    request = header.get("request")
    described = request.get("buffers") if isinstance(request, dict) else None
    if not isinstance(described, dict):
        raise MessageError("invalid_parameter", "submit: the request must describe its buffers "
                                                "(request.buffers)", job_id=job_id, parameter="buffers")
    moved = set()
    for ref in header.get("bulk") or ():
        if isinstance(ref, dict) and type(ref.get("index")) is int:
            moved.add(ref["index"])
    for i, (name, size) in enumerate(zip(names, sizes)):
        if name not in described:
            raise MessageError("invalid_parameter", f"submit: payload {shown(name)} is not described in "
                                                    f"request.buffers", job_id=job_id, parameter="buffers")
        try:
            need = check_buffer_header(name, described[name])
        except ValidationError as e:
            raise MessageError("invalid_parameter", str(e), job_id=job_id, parameter=e.parameter) from None
        if size != need and not (size == 0 and i in moved):
            raise MessageError("invalid_parameter",
                               f"buffer {name!r}: {described[name]['width']}x{described[name]['height']} "
                               f"{described[name]['format']} is {need} bytes, the frame declares {size}",
                               job_id=job_id, parameter=name)
