"""The wire protocol: framing, limits, and the job objects as frames (standard library only)."""

import asyncio
import io
import json
import struct

import pytest

from core.contract.events import Accepted, Capabilities, Failed, Finished, JobCancelled, Preview, Progress
from core.contract.jobs import ImageBuffer, JobRequest, JobResult, Options, Params, Patch
from core.contract.params import ValidationError
from core.link import protocol as P


def frames(*msgs) -> bytes:
    return b"".join(P.encode_bytes(m) for m in msgs)


def read_all(data: bytes, limits=P.LIMITS):
    """Every message of ``data`` (MessageErrors as items, stops at FramingError)."""
    f = io.BytesIO(data)
    out = []
    while True:
        try:
            m = P.read_message(f.read, limits)
        except P.MessageError as e:
            out.append(e)
            continue
        if m is None:
            return out
        out.append(m)


def async_read_all(data: bytes, limits=P.LIMITS):
    async def go():
        r = asyncio.StreamReader()
        r.feed_data(data)
        r.feed_eof()
        out = []
        while True:
            try:
                m = await P.read_message_async(r, limits)
            except P.MessageError as e:
                out.append(e)
                continue
            if m is None:
                return out
            out.append(m)

    return asyncio.run(go())


def sample_request() -> JobRequest:
    img = ImageBuffer(3, 2, "RGBA_F32", bytes(range(96)), linear=True)
    mask = ImageBuffer(3, 2, "GRAY_U8", bytes([0, 255, 128, 7, 9, 200]))
    depth = ImageBuffer(3, 2, "GRAY_U16", bytes(range(12)))
    return JobRequest("restyle", Params(prompt="a red ball ✓", seed=12, steps=7), Options(grow=3, depth_source="given"),
                      model="sd2-depth", image=img, mask=mask, depth=depth, origin=(5, 6), canvas=(100, 50))


def test_frame_layout_is_prefix_json_header_then_payloads():
    data = P.encode_bytes(P.message("preview", [b"abc", b"", b"\x00\xff"], job_id="j", width=1, height=1))
    magic, hlen, plen = struct.unpack("!4sIQ", data[:16])
    assert magic == P.MAGIC and plen == 5
    header = json.loads(data[16:16 + hlen])
    assert header["type"] == "preview" and header["payloads"] == [3, 0, 2]
    assert data[16 + hlen:] == b"abc\x00\xff"


@pytest.mark.parametrize("reader", [read_all, async_read_all])
def test_messages_round_trip_in_order(reader):
    msgs = [P.hello(token="t"), P.message("cancel", job_id="a"),
            P.message("result", [b"x" * 1000, b"y" * 3], job_id="b", result={"k": [1, 2.5, None, "é"]})]
    got = reader(frames(*msgs))
    assert [m.header for m in got] == [m.header for m in msgs]
    assert [m.payloads for m in got] == [[], [], [b"x" * 1000, b"y" * 3]]


def test_request_round_trips_with_raw_pixel_payloads():
    req = sample_request()
    msg = P.submit("job-1", req, previews=False)
    # pixels travel as payloads, not inside the JSON
    assert [len(p) for p in msg.payloads] == [96, 6, 12]
    (back,) = read_all(P.encode_bytes(msg))
    assert back.header["previews"] is False and P.job_id_of(back) == "job-1"
    assert P.request_of(back) == req


def test_result_round_trips_and_becomes_a_finished_event():
    res = JobResult("inpaint", (Patch(4, 5, ImageBuffer(2, 1, "BGRA_U16", bytes(range(16))), 99),
                                Patch(0, 0, ImageBuffer(1, 1, "RGBA_F16", b"\x01" * 8, True), 100)),
                    model="sd2-inpainting", params=Params(prompt="p", seed=99), options=Options(feather=2),
                    warnings=("w",), timings={"seconds": 1.5})
    (back,) = read_all(P.encode_bytes(P.result("j", res)))
    event = P.event_of(back)
    assert event == Finished("j", res)


def test_every_job_event_decodes():
    cases = [
        (P.message("accepted", job_id="j", position=3), Accepted("j", 3)),
        (P.message("progress", job_id="j", step=2, total=9, phase="denoising"), Progress("j", 2, 9, "denoising")),
        (P.preview("j", 2, 1, b"abcdef"), Preview("j", 2, 1, b"abcdef")),
        (P.message("cancelled", job_id="j"), JobCancelled("j")),
        (P.error("invalid_parameter", "steps must be in 1–512", job_id="j", parameter="steps"),
         Failed("j", "invalid_parameter", "steps must be in 1–512", "steps")),
    ]
    for msg, event in cases:
        (back,) = read_all(P.encode_bytes(msg))
        assert P.event_of(back) == event
    # not about one job
    assert P.event_of(P.error("bad_message", "x")) is None
    assert P.event_of(P.message("heartbeat")) is None


def test_capabilities_round_trip():
    caps = Capabilities(1, "0.1.0", "cpu", "bfloat16", "CPU with amx", ({"key": "sd2-inpainting", "found": True},),
                        ("inpaint",))
    (back,) = read_all(P.encode_bytes(P.capabilities(caps)))
    assert P.capabilities_of(back) == caps


def test_bad_event_fields_are_message_errors():
    for msg in (P.message("progress", job_id="j", step="2", total=9, phase="x"),
                P.message("accepted", job_id="j", position=True),
                P.message("cancelled", job_id=""),
                P.preview("j", 2, 2, b"short")):
        with pytest.raises(P.MessageError):
            P.event_of(msg)


def test_bad_magic_is_a_framing_error():
    data = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
    with pytest.raises(P.FramingError, match="magic"):
        read_all(data)


def test_truncated_frames_are_framing_errors_at_every_cut():
    data = P.encode_bytes(P.message("result", [b"0123456789"], job_id="j", result={}))
    for cut in range(1, len(data)):
        with pytest.raises(P.FramingError):
            read_all(data[:cut])
        with pytest.raises(P.FramingError):
            async_read_all(data[:cut])


class NoBigReads(io.BytesIO):
    """A stream that fails the test if a reader asks for more than it should ever allocate."""

    def read(self, n=-1):
        assert 0 <= n <= 1 << 20, f"reader asked for {n} bytes"
        return super().read(n)


def test_oversized_lengths_are_refused_before_reading():
    limits = P.Limits(max_header=100, max_payload=1000, max_payloads=2)
    big_header = P.PREFIX.pack(P.MAGIC, 101, 0) + b"{" * 200
    big_payload = P.PREFIX.pack(P.MAGIC, 10, 1 << 40) + b"x" * 10
    for data in (big_header, big_payload):
        with pytest.raises(P.FramingError, match="over the limit"):
            P.read_message(NoBigReads(data).read, limits)
    # pre-authentication: no payloads at all
    with pytest.raises(P.FramingError):
        read_all(P.encode_bytes(P.message("submit", [b"x"])), P.PRE_AUTH_LIMITS)


def test_bad_header_is_skipped_and_the_stream_stays_in_sync():
    good = P.encode_bytes(P.message("cancel", job_id="after"))
    not_json = P.PREFIX.pack(P.MAGIC, 5, 3) + b"{nope" + b"abc"
    not_object = P.PREFIX.pack(P.MAGIC, 2, 0) + b"[]"
    no_type = P.PREFIX.pack(P.MAGIC, 2, 0) + b"{}"
    wrong_sizes = P.PREFIX.pack(P.MAGIC, 31, 4) + b'{"type":"x","payloads":[1,2,3]}' + b"abcd"
    nan = P.PREFIX.pack(P.MAGIC, 24, 0) + b'{"type":"x","a":NaN    }'
    for bad in (not_json, not_object, no_type, wrong_sizes, nan):
        got = read_all(bad + good)
        assert isinstance(got[0], P.MessageError) and got[0].code == "bad_message"
        assert got[1].header == {"type": "cancel", "job_id": "after"}


def test_json_cannot_carry_nan():
    with pytest.raises(ValueError):
        P.encode(P.message("progress", value=float("nan")))


def test_hello_version_check():
    assert P.check_hello(P.hello()) == P.PROTOCOL_VERSION
    for version in (P.PROTOCOL_VERSION + 1, 0, "1", None, 1.0):
        with pytest.raises(P.MessageError) as e:
            P.check_hello(P.message("hello", protocol=version))
        assert e.value.code == "version_mismatch"


def test_request_of_refuses_mismatched_buffers():
    msg = P.submit("j", sample_request())
    msg.payloads.pop()
    with pytest.raises(P.MessageError):
        P.request_of(msg)
    msg = P.submit("j", sample_request())
    msg.header["request"]["buffers"]["mask"]["width"] = 4  # header says 4x2, payload holds 3x2
    req = P.request_of(msg)
    with pytest.raises(ValidationError) as e:
        req.mask.check("mask")
    assert e.value.parameter == "mask"


def test_skip_to_frame_ignores_text_before_the_first_frame():
    async def go(data):
        r = asyncio.StreamReader()
        r.feed_data(data)
        r.feed_eof()
        junk, prefix = await P.skip_to_frame_async(r)
        msg = await P.read_message_async(r, prefix=prefix) if prefix else None
        return junk, msg

    junk, msg = asyncio.run(go(b"conda says hi\n" + P.encode_bytes(P.hello())))
    assert junk == b"conda says hi\n" and msg.type == "hello"
    junk, msg = asyncio.run(go(b"Traceback: no module named torch\n"))
    assert msg is None and b"Traceback" in junk


def test_error_codes_are_distinct_and_stable():
    assert len(set(P.ERROR_CODES)) == len(P.ERROR_CODES)
    for code in ("engine_died", "heartbeat_lost", "job_stuck", "engine_start_timeout", "invalid_parameter",
                 "model_missing", "out_of_memory", "unauthorized", "version_mismatch", "protocol_error"):
        assert code in P.ERROR_CODES


# --- large payloads: read and written a slice at a time (the editor's event loop keeps running) ---

def test_a_large_payload_arrives_whole_when_fed_in_pieces_and_when_already_buffered():
    big = bytes(range(256)) * (3 * P.PAYLOAD_CHUNK // 256 + 7)       # over three read chunks, uneven
    data = frames(P.message("result", [big, b"tail"], job_id="j"), P.message("heartbeat"))

    async def fed_in_pieces():
        r = asyncio.StreamReader(limit=1 << 16)

        async def feed():
            for i in range(0, len(data), 100_003):
                r.feed_data(data[i:i + 100_003])
                await asyncio.sleep(0)
            r.feed_eof()

        feeder = asyncio.create_task(feed())
        first = await P.read_message_async(r)
        second = await P.read_message_async(r)
        await feeder
        return [first, second]

    for got in (async_read_all(data), asyncio.run(fed_in_pieces())):
        assert [m.type for m in got] == ["result", "heartbeat"]
        assert bytes(got[0].payloads[0]) == big and bytes(got[0].payloads[1]) == b"tail"


def test_a_large_payload_cut_short_is_a_framing_error():
    data = frames(P.message("result", [bytes(2 * P.PAYLOAD_CHUNK + 5)], job_id="j"))
    with pytest.raises(P.FramingError):
        async_read_all(data[:-3])


def test_the_client_writes_a_large_frame_in_slices_and_keeps_the_order():
    import socket

    from core.link.client import WRITE_SLICE, EngineLink

    big = bytes(range(251)) * (3 * WRITE_SLICE // 251 + 1)

    async def go():
        a, b = socket.socketpair()
        reader_b, writer_b = await asyncio.open_connection(sock=b)
        reader_a, writer_a = await asyncio.open_connection(sock=a)
        link = EngineLink(reader_a, writer_a, where="test")
        assert link.send(P.message("submit", [big], job_id="big"))
        for _ in range(5):          # let the flusher take the frame and block on the unread socket
            await asyncio.sleep(0)
        # Mid-frame (nothing left in the queue, the frame not all written): the next message waits.
        assert not link._backlog and not link._flusher.done()
        assert link.send(P.message("cancel", job_id="small"))
        got = [await P.read_message_async(reader_b), await P.read_message_async(reader_b)]
        await link._flusher
        writer_a.close()
        writer_b.close()
        return got

    first, second = asyncio.run(go())
    assert (first.type, first.get("job_id"), bytes(first.payloads[0]) == big) == ("submit", "big", True)
    assert (second.type, second.get("job_id")) == ("cancel", "small")


def test_a_large_frame_gives_the_event_loop_a_turn_between_slices_even_when_the_peer_keeps_up():
    """drain() returns at once when the kernel takes a whole slice (a widened pipe, a fast reader), so
    the writer must yield by itself: the editor's UI runs between every two slices."""
    import socket

    from core.link.client import WRITE_SLICE, EngineLink

    big = bytes(4 * WRITE_SLICE)

    async def go():
        a, b = socket.socketpair()
        for s, opt in ((a, socket.SO_SNDBUF), (b, socket.SO_RCVBUF)):
            s.setsockopt(socket.SOL_SOCKET, opt, 16 * WRITE_SLICE)   # the kernel takes every slice at once
        reader_b, writer_b = await asyncio.open_connection(sock=b)
        reader_a, writer_a = await asyncio.open_connection(sock=a)
        link = EngineLink(reader_a, writer_a, where="test")
        ticks, seen = [0], []
        write = writer_a.write
        writer_a.write = lambda data: (seen.append(ticks[0]), write(data))[1]

        async def ui():
            while True:
                ticks[0] += 1
                await asyncio.sleep(0)

        ticker = asyncio.create_task(ui())
        link.send(P.message("submit", [big], job_id="big"))
        got = await P.read_message_async(reader_b)
        await link._flusher
        ticker.cancel()
        writer_a.close()
        writer_b.close()
        return got, seen

    got, seen = asyncio.run(go())
    assert bytes(got.payloads[0]) == big
    slices = seen[1:]                  # the first write is the frame's header
    assert len(slices) >= 4 and all(later > earlier for earlier, later in zip(slices, slices[1:]))


def test_reading_a_buffered_large_payload_gives_the_event_loop_turns():
    big = bytes(4 * P.PAYLOAD_CHUNK)
    data = frames(P.message("result", [big], job_id="j"))

    async def go():
        r = asyncio.StreamReader(limit=len(data) + 1)
        r.feed_data(data)              # all there already: read() never has to wait
        r.feed_eof()
        ticks = [0]

        async def ui():
            while True:
                ticks[0] += 1
                await asyncio.sleep(0)

        ticker = asyncio.create_task(ui())
        await asyncio.sleep(0)
        start = ticks[0]
        msg = await P.read_message_async(r)
        ticker.cancel()
        return msg, ticks[0] - start

    msg, turns = asyncio.run(go())
    assert bytes(msg.payloads[0]) == big and turns >= 3
