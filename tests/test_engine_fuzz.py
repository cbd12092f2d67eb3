"""Malformed input never takes the engine down: garbage, truncated frames, oversized lengths, wrong
versions, unknown message types and mutated requests (hypothesis) each get an error reply while the
engine stays alive, or are cleanly refused at the connection.

Most cases run against the engine's dispatcher in this process, over a socket pair (the same
``Connection`` and ``EngineService`` code as the engine process); a smaller set runs against the real
``python -m core.engine`` subprocess.
"""

import io
import json
import logging
import re
import socket
import threading
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.contract.jobs import MODES, PIXEL_FORMATS, ImageBuffer, JobRequest, Options, Params
from core.engine.service import EngineService
from core.link import protocol as P

from .engine_helpers import LONG, RawEngine, engine_env, socket_connection

# Fuzzed frames sent, per transport (a case's frames, not counting the marker that checks the reply).
COUNTS = {"in-process": 0, "stdio": 0}
# What no message to a client may contain: the words of a Python exception instead of ours.
UNCLEAR = re.compile(
    r"object is not|invalid literal|Traceback|NoneType|'(str|int|float|bool|dict|list|tuple|bytes)'"
    r"|\b[A-Z][A-Za-z]*(Error|Exception)\b|not subscriptable|has no attribute|unhashable|unexpected keyword"
    r"|positional argument|takes \d+ |unsupported operand|codec can't|Expecting (value|property|',')"
    r"|line \d+ column \d+|\(char \d+\)|surrogates not allowed|__\w+__|<class |object at 0x")


def unclear(messages) -> list[str]:
    """The texts among the engine's messages that look like a Python exception's."""
    texts = [echo_removed(m) for m in messages if m.type in ("error", "model_status")]
    return [t for t in texts if isinstance(t, str) and UNCLEAR.search(t)]


def echo_removed(m):
    """The message's text without what it quotes of the client's own frame: an unknown message type is
    echoed (a type of "bool" is the client's word, not Python's)."""
    text = m.get("message")
    if m.get("code") == "unknown_message" and isinstance(text, str):
        return re.sub(r"^unknown message type '.*'$", "unknown message type", text, flags=re.S)
    return text


def frames_in(data: bytes) -> int:
    return max(1, data.count(P.MAGIC))


VALID_IDS = st.sampled_from(["j", "job-1", "a1b2c3d4e5f60718293a4b5c6d7e8f90", "x.y:z_9"])
BASE = JobRequest("inpaint", Params(prompt="x", steps=1, seed=1, strength=1.0), model="/nonexistent/model",
                  image=ImageBuffer(8, 8, "BGRA_U8", bytes(range(256))),
                  mask=ImageBuffer(8, 8, "GRAY_U8", bytes([255] * 64)))

json_scalars = (st.none() | st.booleans() | st.integers(-(2**70), 2**70)
                | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=12))
json_values = st.recursive(json_scalars, lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=8), c,
                                                                                              max_size=3),
                           max_leaves=8)
message_types = st.sampled_from(P.CLIENT_MESSAGES + P.ENGINE_MESSAGES) | st.text(max_size=16)
payload_lists = st.lists(st.binary(max_size=24), max_size=3)


def raw_frame(header: bytes, payloads=()) -> bytes:
    return P.PREFIX.pack(P.MAGIC, len(header), sum(map(len, payloads))) + header + b"".join(payloads)


def frame(header: dict, payloads=()) -> bytes:
    h = {"payloads": [len(p) for p in payloads], **header}
    return raw_frame(json.dumps(h).encode(), payloads)


HELLO = frame({"type": "hello", "protocol": P.PROTOCOL_VERSION})
PING = frame({"type": "ping"})
SUBMIT = P.encode_bytes(P.submit("fz", BASE))


# --- strategies ---------------------------------------------------------------------------------

@st.composite
def random_messages(draw, allow_shutdown=True):
    """Well-framed messages with random types and fields."""
    out = b""
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(message_types)
        if not allow_shutdown and kind == "shutdown":
            kind = "shutdown?"
        fields = draw(st.dictionaries(st.sampled_from(["job_id", "request", "buffers", "protocol", "token",
                                                       "previews", "position", "heartbeat"]) | st.text(max_size=6),
                                      json_values, max_size=4))
        out += frame({**fields, "type": kind}, draw(payload_lists))
    return out


def leaves(d, path=()):
    if isinstance(d, dict):
        yield path
        for k, v in d.items():
            yield from leaves(v, (*path, k))
    elif isinstance(d, list):
        yield path
        for i, v in enumerate(d):
            yield from leaves(v, (*path, i))
    else:
        yield path


@st.composite
def mutated_submits(draw):
    """A valid submit with one to three fields replaced by random JSON, payloads sometimes changed."""
    msg = P.submit(draw(VALID_IDS | st.text(max_size=8)) or "j", BASE)
    header = json.loads(json.dumps(msg.header))
    for _ in range(draw(st.integers(1, 3))):
        paths = [p for p in leaves(header) if p and p[0] != "type"]  # other types: random_messages
        path = draw(st.sampled_from(paths))
        target = header
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = draw(json_values)
    payloads = list(msg.payloads)
    if draw(st.integers(0, 4)) == 0:
        payloads = draw(st.lists(st.binary(max_size=300), max_size=3))
    header.pop("payloads", None)
    return frame(header, payloads)


@st.composite
def plausible_submits(draw):
    """Well-formed submits, each value usually valid and sometimes odd (out of range, wrong size,
    another mode or model).  Many are refused naming a parameter; the rest run for real on the tiny models."""

    def mostly(valid, odd):
        return draw(odd if draw(st.integers(0, 11)) == 0 else valid)

    w, h = draw(st.integers(1, 12)), draw(st.integers(1, 12))
    fmt = mostly(st.sampled_from(["BGRA_U8", "BGRA_U16", "RGBA_F16", "RGBA_F32"]), st.sampled_from(sorted(PIXEL_FORMATS)))
    c, b = PIXEL_FORMATS[fmt]
    size = w * h * c * b + mostly(st.just(0), st.sampled_from([1, -1]))
    image = ImageBuffer(w, h, fmt, draw(st.binary(min_size=size, max_size=size)), draw(st.booleans()))
    mask = None
    if draw(st.booleans()):
        mw, mh = mostly(st.just((w, h)), st.just((w + 1, h)))
        mask = ImageBuffer(mw, mh, "GRAY_U8", draw(st.binary(min_size=mw * mh, max_size=mw * mh)))
    params = Params(
        prompt=draw(st.text(max_size=30)), negative_prompt=draw(st.text(max_size=10)),
        num_images=mostly(st.just(1), st.integers(-2, 9)), steps=mostly(st.integers(1, 2), st.sampled_from([-5, 0, 513, 10**6])),
        guidance=mostly(st.floats(1, 20), st.floats(-5, 50)), strength=mostly(st.floats(0.5, 1), st.floats(-1, 2)),
        seed=mostly(st.none() | st.integers(0, 2**32 - 1), st.integers(-(2**40), 2**40)), weighted=draw(st.booleans()))
    options = Options(grow=mostly(st.integers(0, 40), st.integers(-2, 600)),
                      feather=mostly(st.integers(0, 40), st.integers(-2, 600)), color_match=draw(st.booleans()),
                      masked_content=mostly(st.sampled_from(["original", "fill", "noise"]), st.just("bogus")))
    mode = mostly(st.just("inpaint"), st.sampled_from([*MODES, "bogus"]))
    model = mostly(st.sampled_from([None, "sd2-inpainting"]),
                   st.sampled_from(["/nonexistent/model", "sd2-depth", "sd2-x4-upscaler"]))
    origin = mostly(st.just((0, 0)), st.sampled_from([(3, 2), (-1, 0)]))
    canvas = mostly(st.just(None), st.sampled_from([(w + 3, h + 2), (1, 1), (20000, 5)]))
    req = JobRequest(mode, params, options, model=model, image=image, mask=mask, origin=origin, canvas=canvas)
    job_id = mostly(VALID_IDS, st.text(min_size=1, max_size=8))
    return P.encode_bytes(P.submit(job_id, req, previews=draw(st.booleans()))), job_id


@st.composite
def oversized(draw):
    magic = draw(st.sampled_from([P.MAGIC, P.MAGIC, b"\x89DDQ", b"\x00\x00\x00\x00"]))
    header_len = draw(st.sampled_from([0, P.LIMITS.max_header + 1, 2**32 - 1]) | st.integers(0, 2**32 - 1))
    payload_len = draw(st.sampled_from([P.LIMITS.max_payload + 1, 2**64 - 1]) | st.integers(0, 2**64 - 1))
    return P.PREFIX.pack(magic, header_len, payload_len) + draw(st.binary(max_size=40))


def truncations():
    convo = HELLO + SUBMIT + frame({"type": "cancel", "job_id": "fz"})
    return st.integers(1, len(convo) - 1).map(lambda cut: convo[:cut])


hello_versions = json_values.map(lambda v: frame({"type": "hello", "protocol": v}) + PING) \
    | st.just(frame({"type": "hello"}) + PING)
junk_headers = st.tuples(st.binary(min_size=1, max_size=200), payload_lists).map(lambda t: raw_frame(*t))


# --- in-process dispatcher over a socket pair -----------------------------------------------------

class ErrorLog(logging.Handler):
    def __init__(self):
        super().__init__(logging.ERROR)
        self.records = []

    def emit(self, record):
        self.records.append(record)


@pytest.fixture(scope="module")
def service(models):
    errors = ErrorLog()
    logging.getLogger("core").addHandler(errors)
    # like a shared server; frequent heartbeats check that none slips out after a refusal
    svc = EngineService(models=models, warm_up=False, allow_shutdown=False, heartbeat=0.02)
    svc.errors = errors
    yield svc
    svc.close()
    logging.getLogger("core").removeHandler(errors)
    print(f"\nfuzz cases: {COUNTS}")


def converse(service, data: bytes, timeout: float = 120, until_done: bool = False) -> tuple[list, str]:
    """Send ``data`` on a fresh connection, close our side, return (reply messages, why it ended).

    ``until_done``: keep the connection open until every accepted job has sent its final message."""
    ours, conn = socket_connection(service, "fuzz")
    ended = {}
    t = threading.Thread(target=lambda: ended.setdefault("reason", conn.serve()), daemon=True)
    t.start()
    replies = []
    settled = threading.Event()
    broken = []

    def pump():
        f = ours.makefile("rb")
        accepted, finished, pinged = set(), set(), False
        try:
            while (m := P.read_message(f.read)) is not None:
                replies.append(m)
                if m.type == "accepted":
                    accepted.add(m.get("job_id"))
                elif m.type in ("result", "cancelled", "error") and m.get("job_id") is not None:
                    finished.add(m.get("job_id"))
                elif m.type == "error" and m.get("code") == "unknown_message":
                    pinged = True
                if m.get("fatal") or (pinged and accepted <= finished):
                    settled.set()
        except Exception as e:  # a reply that does not decode
            broken.append(e)
        settled.set()

    r = threading.Thread(target=pump, daemon=True)
    r.start()
    try:
        ours.sendall(data)
        if until_done:
            settled.wait(timeout)
        ours.shutdown(socket.SHUT_WR)
    except OSError:  # refused and closed while we were still sending
        pass
    t.join(timeout)
    r.join(timeout)
    ours.close()
    assert not t.is_alive() and not r.is_alive(), "the connection hung"
    assert not broken, broken
    return replies, ended["reason"]


def decode_replies(data: bytes) -> list:
    f = io.BytesIO(data)
    out = []
    while (m := P.read_message(f.read)) is not None:  # any error here fails the test
        out.append(m)
    return out


def check(service, replies, reason):
    for m in replies:
        assert m.type in P.ENGINE_MESSAGES, m.header
        if m.type == "error":
            assert m.get("code") in P.ENGINE_ERRORS and isinstance(m.get("message"), str), m.header
    assert not unclear(replies), unclear(replies)
    fatal = [m for m in replies if m.type == "error" and m.get("fatal")]
    if fatal:  # refused at the connection: after the refusal only the jobs it had get their end, then it closes
        assert len(fatal) == 1 and reason in ("protocol_error", "version_mismatch", "unauthorized")
        after = replies[replies.index(fatal[0]) + 1:]
        assert all(m.type == "queue" or m.get("job_id") is not None for m in after), [m.header for m in after]
    assert not service.errors.records, [r.getMessage() for r in service.errors.records]
    # the engine is alive and in sync for the next client
    after, _ = converse(service, HELLO + PING)
    assert [m.type for m in after][:1] == ["hello"]
    assert any(m.type == "error" and m.get("code") == "unknown_message" for m in after)


def case(service, data, until_done=False):
    COUNTS["in-process"] += frames_in(data)
    replies, reason = converse(service, data, until_done=until_done)
    check(service, replies, reason)
    return replies, reason


FAST = settings(max_examples=150, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@FAST
@given(data=st.binary(max_size=300))
def test_garbage_bytes(service, data):
    replies, reason = case(service, data)
    if data and not data.startswith(P.MAGIC[: len(data)]):
        assert reason == "protocol_error" and replies[-1].get("code") == "protocol_error"


@FAST
@given(data=junk_headers, after_hello=st.booleans())
def test_frames_with_junk_headers(service, data, after_hello):
    case(service, (HELLO if after_hello else b"") + data + PING)


@settings(FAST, max_examples=250)
@given(data=random_messages())
def test_unknown_types_and_random_fields(service, data):
    replies, reason = case(service, HELLO + data + PING)
    assert reason in ("eof", "shutdown", "protocol_error", "version_mismatch")


@settings(FAST, max_examples=100)
@given(data=truncations())
def test_truncated_frames(service, data):
    replies, reason = case(service, data)
    complete = decode_count(data)
    assert reason == ("eof" if complete else "protocol_error")


def decode_count(data: bytes) -> bool:
    """True if ``data`` ends exactly at a frame boundary."""
    f = io.BytesIO(data)
    try:
        while P.read_message(f.read) is not None:
            pass
        return True
    except P.FramingError:
        return False


@settings(FAST, max_examples=100)
@given(data=hello_versions)
def test_wrong_versions_are_refused(service, data):
    replies, reason = case(service, data)
    version_ok = replies and replies[0].type == "hello"
    if not version_ok:
        assert replies[0].get("code") == "version_mismatch" and reason == "version_mismatch"


@FAST
@given(data=oversized(), after_hello=st.booleans())
def test_oversized_and_corrupt_prefixes_are_refused(service, data, after_hello):
    replies, reason = case(service, (HELLO if after_hello else b"") + data)
    assert reason == "protocol_error" and replies[-1].get("code") == "protocol_error"


@settings(FAST, max_examples=250)
@given(data=mutated_submits())
def test_mutated_requests_fail_with_their_job_or_run(service, data):
    replies, reason = case(service, HELLO + data + PING, until_done=True)
    job_errors = [m for m in replies if m.type == "error" and m.get("job_id") is not None]
    accepted = [m for m in replies if m.type == "accepted"]
    # a submit is either refused (one error naming the job) or accepted: never silently dropped
    general = [m for m in replies if m.type == "error" and m.get("job_id") is None and m.get("code") != "unknown_message"]
    assert len(job_errors) + len(accepted) + len(general) >= 1
    # every accepted job ended exactly once, while its client was still there to hear it
    for a in accepted:
        ends = [m for m in replies if m.type in ("result", "cancelled", "error") and m.get("job_id") == a.get("job_id")]
        assert len(ends) == 1, [m.header for m in ends]


@settings(FAST, max_examples=100)
@given(case_=plausible_submits())
def test_odd_but_well_formed_requests_are_refused_or_run(service, case_):
    data, job_id = case_
    replies, reason = case(service, HELLO + data + PING, until_done=True)
    assert reason == "eof"
    job = [m for m in replies if m.get("job_id") is not None]
    if not P.valid_job_id(job_id):  # refused without naming the job: its id cannot be sent back
        assert job == []    # refused once: for its id, or for its payloads when those are checked first
        assert len([m for m in replies if m.type == "error" and m.get("code") in ("bad_message",
                                                                                  "invalid_parameter")]) == 1
        return
    accepted = [m for m in job if m.type == "accepted"]
    ends = [m for m in job if m.type in ("result", "cancelled", "error")]
    assert len(ends) == 1, [m.header for m in job]  # refused, or accepted and then ended: once
    if ends[0].type == "error" and not accepted:
        assert ends[0].get("code") == "invalid_parameter" and ends[0].get("parameter")
    if ends[0].type == "result":
        res = P.result_of(ends[0])
        assert all(len(p.image.data) == p.image.expected_nbytes() for p in res.patches)


def test_the_queue_is_empty_after_all_those_clients_left(service):
    deadline = time.monotonic() + 60
    while len(service.queue) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(service.queue) == 0


# --- the real engine processes: stdio and serve -------------------------------------------------------
# At least STDIO_FRAMES and SERVE_FRAMES fuzzed frames (DD_TEST_LONG=1: ten times as many): no process
# dies, no frame goes unanswered, no message is unclear.

STDIO_FRAMES = 10_000 if LONG else 1_000
SERVE_FRAMES = 10_000 if LONG else 1_000
FIGURES = {t: {"frames": 0, "deaths": 0, "hangs": 0, "unclear": 0} for t in ("stdio", "serve")}


def tally(transport: str, data: bytes, replies, alive: bool) -> None:
    """Count the case's frames; a death or an unclear message is counted, then fails the test."""
    figures = FIGURES[transport]
    figures["frames"] += frames_in(data)
    COUNTS[transport] = figures["frames"]
    bad = unclear(replies)
    figures["unclear"] += len(bad)
    figures["deaths"] += not alive
    assert alive, f"the {transport} engine died"
    assert not bad, bad
    for m in replies:
        assert m.type in P.ENGINE_MESSAGES, m.header
        assert m.type != "error" or m.get("code") in P.ENGINE_ERRORS, m.header


def examples(frames: int, per_example: float) -> int:
    """Enough examples for ``frames`` at a cautious ``per_example`` (the mean varies with hypothesis versions)."""
    return int(frames / per_example) + 20


@pytest.fixture(scope="module")
def raw_engine(tiny_root):
    raw = RawEngine(env=engine_env(tiny_root))
    assert raw.hello().type == "hello"
    yield raw
    assert raw.close(timeout=60) == 0
    assert b"Traceback" not in raw.stderr, raw.stderr.decode(errors="replace")[-2000:]


SUBPROCESS = settings(deadline=None, derandomize=True, database=None,
                      suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                             HealthCheck.data_too_large])
ANY_MESSAGES = random_messages(allow_shutdown=False) | mutated_submits() | junk_headers


def marked(raw_engine, transport, data):
    """Send ``data`` then a marker; wait for the marker's answer (no answer within 120 s is a hang)."""
    marker = f"ping-{sum(f['frames'] for f in FIGURES.values())}"
    assert raw_engine.send_bytes(data + frame({"type": marker}))
    try:
        msg, before = raw_engine.until(lambda m: m.type == "error" and marker in m.get("message", ""),
                                       timeout=120)
    except TimeoutError:
        FIGURES[transport]["hangs"] += 1
        raise
    return before


@settings(SUBPROCESS, max_examples=examples(STDIO_FRAMES, 1.5))
@given(data=ANY_MESSAGES)
def test_engine_process_answers_bad_messages_and_stays_alive(raw_engine, data):
    before = marked(raw_engine, "stdio", data)
    tally("stdio", data, before, raw_engine.proc.poll() is None)
    assert not [m for m in before if m.get("fatal")]


@settings(SUBPROCESS, max_examples=12)
@given(data=st.binary(min_size=1, max_size=100) | oversized() | truncations().filter(lambda d: len(d) > len(HELLO))
       | st.just(b"GET / HTTP/1.1\r\nHost: engine\r\n\r\n"))
def test_engine_process_refuses_a_broken_stream_cleanly(data):
    raw = RawEngine()
    raw.send_bytes(data)
    code = raw.close(timeout=60)
    replies = decode_replies(raw.proc.stdout.read())
    tally("stdio", data, replies, True)
    assert code in (0, 2)
    if code == 2:  # refused: it said why before closing
        assert replies[-1].type == "error" and replies[-1].get("fatal")
        assert replies[-1].get("code") in ("protocol_error", "version_mismatch")
    assert b"Traceback" not in raw.stderr


@pytest.fixture(scope="module")
def server(tiny_root):
    from .engine_helpers import ServeProcess

    srv = ServeProcess(env=engine_env(tiny_root))
    yield srv
    assert srv.stop() == 0
    assert "Traceback" not in srv.stderr, srv.stderr[-2000:]


def serve_case(server, data: bytes, authenticate: bool = True) -> tuple[list, bool]:
    """``data`` on a fresh connection (after a hello with the token), then a marker, then our side closes;
    the replies until the server closes.  Silence for 120 s is a hang."""
    sock = server.connect(timeout=120)
    marker = f"ping-{FIGURES['serve']['frames']}"
    replies = []
    try:
        hello = P.encode_bytes(P.hello(token=server.token)) if authenticate else b""
        try:
            sock.sendall(hello + data + frame({"type": marker}))
            sock.shutdown(socket.SHUT_WR)
        except OSError:   # refused and closed while we were still sending
            pass
        f = sock.makefile("rb")
        try:
            while (m := P.read_message(f.read)) is not None:
                replies.append(m)
        except TimeoutError:
            FIGURES["serve"]["hangs"] += 1
            raise AssertionError("the server did not answer within 120 s") from None
        except (ConnectionResetError, P.FramingError):
            pass
    finally:
        sock.close()
    answered = any(m.type == "error" and marker in m.get("message", "") for m in replies)
    fatal = [m for m in replies if m.type == "error" and m.get("fatal")]
    return replies, answered or bool(fatal) or not authenticate


SERVE_MESSAGES = ANY_MESSAGES | oversized() | truncations() | st.binary(min_size=1, max_size=200)


@settings(SUBPROCESS, max_examples=examples(SERVE_FRAMES, 1.4))
@given(data=SERVE_MESSAGES)
def test_serve_answers_bad_frames_and_stays_alive(server, data):
    replies, settled = serve_case(server, data)
    tally("serve", data, replies, server.alive())
    assert settled, [m.header for m in replies]
    assert replies[0].type == "hello"
    fatal = [m for m in replies if m.type == "error" and m.get("fatal")]
    assert len(fatal) <= 1 and all(m.get("code") in ("protocol_error", "too_slow") for m in fatal), fatal


@settings(SUBPROCESS, max_examples=30)
@given(case_=plausible_submits())
def test_serve_runs_or_refuses_well_formed_requests(server, case_):
    data, _job_id = case_
    replies, settled = serve_case(server, data)
    tally("serve", data, replies, server.alive())
    assert settled


@settings(SUBPROCESS, max_examples=60)
@given(data=SERVE_MESSAGES | hello_versions)
def test_serve_refuses_anything_before_the_token(server, data):
    replies, _ = serve_case(server, data, authenticate=False)
    tally("serve", data, replies, server.alive())
    assert not [m for m in replies if m.type not in ("error",)], [m.header for m in replies]
    assert replies and replies[-1].get("fatal")
    assert replies[-1].get("code") in ("unauthorized", "protocol_error", "version_mismatch")


def test_fuzz_figures():
    """The figures of the reliability table (this module's subprocess cases)."""
    print("\n| transport | fuzzed frames | engine deaths | hangs | unclear messages |")
    print("|---|---|---|---|---|")
    for t, f in FIGURES.items():
        print(f"| {t} | {f['frames']} | {f['deaths']} | {f['hangs']} | {f['unclear']} |")
    assert FIGURES["stdio"]["frames"] >= STDIO_FRAMES and FIGURES["serve"]["frames"] >= SERVE_FRAMES, FIGURES
    assert all(f["deaths"] == f["hangs"] == f["unclear"] == 0 for f in FIGURES.values())


# --- what the fuzzing found, pinned down --------------------------------------------------------

def test_unparseable_weighted_prompt_is_a_parameter_error(models):
    from core.contract.params import ValidationError
    from core.pipelines import run_job

    from .helpers import inpaint_request, rect_mask, rgba_u8

    req = inpaint_request(rgba_u8(16, 16), rect_mask(16, 16, 2, 2, 8, 8), steps=1, prompt="a \x0b(b", weighted=True)
    with pytest.raises(ValidationError) as e:
        run_job(req, models)
    assert e.value.parameter == "prompt" and "weights off" in str(e.value)


@pytest.mark.parametrize("model,expected", [("sd2-x4-upscaler", "cannot inpaint"), ({"a": 1}, "must be text")])
def test_a_model_that_cannot_do_the_mode_is_a_parameter_error(models, model, expected):
    from dataclasses import replace

    from core.contract.params import ValidationError
    from core.pipelines import run_job

    from .helpers import inpaint_request, rect_mask, rgba_u8

    req = replace(inpaint_request(rgba_u8(16, 16), rect_mask(16, 16, 2, 2, 8, 8), steps=1), model=model)
    with pytest.raises(ValidationError, match=expected) as e:
        run_job(req, models)
    assert e.value.parameter == "model"
