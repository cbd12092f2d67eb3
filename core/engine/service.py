"""The engine's dispatcher: messages in, jobs through ``core.pipelines.run_job``, events out.

Any job mode is dispatched generically: the request is validated (``core.contract.jobs.validate``), queued,
and run by ``run_job``, which imports ``core.pipelines.<mode>``.  A new mode needs no change here.
"""

from __future__ import annotations

import hmac
import logging
import os
import platform
import re
import threading
import time
from dataclasses import replace

from .. import __version__, pipelines
from ..contract.catalog import CATALOG, MODE_MODELS
from ..contract.events import Capabilities
from ..contract.jobcontrol import Cancelled, JobControl
from ..contract.jobs import EDITOR_FORMATS, JobRequest, JobResult, validate
from ..contract.modes import MODES
from ..contract.params import ValidationError
from ..link import bulk
from ..link.protocol import (
    PROTOCOL_VERSION,
    Message,
    capabilities,
    error,
    hello,
    job_id_of,
    message,
    preview,
    request_of,
    result,
)
from . import handshake
from .jobqueue import DuplicateJob, Job, JobQueue, Outcome, QueueClosed
from .queuenews import QueueNews

log = logging.getLogger(__name__)
# An absolute server path inside a message ("/srv/models/x", "~/x", "C:\\x"): a remote client is not told.
_SERVER_PATH = re.compile(r"(?<![\w.~-])(?:~|[A-Za-z]:)?[/\\][^\s,;'\"()]*")


def redact_paths(text: str) -> str:
    """``text`` with every absolute path replaced by "(a server folder)": for remote clients."""
    return _SERVER_PATH.sub("(a server folder)", text)


class EngineService:
    """Shared by every connection of one engine process.

    ``models``: a ready ``ModelManager`` (tests); otherwise one is made on first use for the device
    policy chosen from ``device``/``dtype``/``compile`` (or DD_DEVICE/DD_DTYPE/DD_COMPILE, or the hardware;
    the UNet is compiled unless ``compile`` is False or DD_COMPILE=0, and only while no job is queued or
    running: ``compile_gate``).
    ``token``: connections made with ``needs_token`` must present it in their hello.
    ``allow_shutdown``: whether a client may stop the engine (yes over stdio, no for a shared server).
    """

    def __init__(self, *, models=None, device: str | None = None, dtype: str | None = None,
                 compile: bool | None = None,
                 models_dir=None, hub_cache=None, capacity: int = 2, heartbeat: float = 1.0,
                 token: str | None = None, allow_shutdown: bool = True, warm_up: bool = True,
                 log_path=None):
        self.heartbeat = heartbeat
        self.log_path = str(log_path) if log_path else None
        self.token = token
        self.allow_shutdown = allow_shutdown
        self._models = models
        self._device, self._dtype, self._compile = device, dtype, compile
        self._models_dir, self._hub_cache, self._capacity = models_dir, hub_cache, capacity
        self._policy = models.policy if models is not None else None
        self._lock = threading.RLock()         # policy, models, capabilities
        self._connections: list = []
        self._capabilities: Capabilities | None = None
        from ..models.compile_gate import CompileGate

        self.compile_gate = CompileGate()
        self._warm_up = warm_up
        self._warm_started = False
        self.closing = False
        self.stopped = threading.Event()
        self.queue = JobQueue(self._execute, devices=(self._queue_device(),), on_final=self._final,
                              on_change=self._queue_changed)
        self.queue_news = QueueNews(self.queue.positions_by_owner)
        self._handlers = {
            "submit": self._submit, "cancel": self._cancel, "cancel_all": self._cancel_all,
            "capabilities": self._send_capabilities, "heartbeat": lambda conn, msg: None,
            "shutdown": self._shutdown, "hello": self._hello_again,
        }
        threading.Thread(target=self._heartbeats, name="heartbeat", daemon=True).start()

    def _queue_device(self) -> str:
        # One worker per device; the device policy chooses a single device, probed lazily.
        return self._device or os.environ.get("DD_DEVICE") or "default"

    # --- connections ----------------------------------------------------------------------------

    def connected(self, conn) -> None:
        with self._lock:
            self._connections.append(conn)

    def disconnected(self, conn) -> None:
        with self._lock:
            if conn in self._connections:
                self._connections.remove(conn)
        cancelled = self.queue.cancel_owner(conn)
        if cancelled:
            log.info("%s left: cancelled its %d job(s)", conn.name, cancelled)

    def handle(self, conn, msg: Message) -> str | None:
        """Handle one message; returns a reason to end the connection, or None to carry on."""
        return handshake.route(conn, msg, self._handlers, self._hello, token_required=conn.needs_token)

    def _hello(self, conn, msg: Message) -> str | None:
        try:
            handshake.accept_hello(conn, msg, lambda token: self._check_token(conn, token))
        except handshake.Refused as e:
            return e.close(conn)
        conn.ready = True
        offered = msg.get("bulk_dir")
        if getattr(conn, "bulk_allowed", False) and isinstance(offered, str) and offered == bulk.directory():
            conn.bulk = offered
        conn.send(hello(engine_version=__version__, pid=os.getpid(), python=platform.python_version(),
                        heartbeat=conn.heartbeat_every, shared=not self.allow_shutdown,
                        log=None if conn.needs_token else self.log_path, bulk_dir=getattr(conn, "bulk", None)))
        log.info("%s: hello (protocol %d)", conn.name, PROTOCOL_VERSION)
        with self._lock:
            caps = self._capabilities
        if caps is not None:
            conn.send(self._capabilities_for(conn, caps))
        self._start_warm_up()
        return None

    def _hello_again(self, conn, msg: Message) -> None:
        conn.send(error("bad_message", "hello was already exchanged on this connection"))

    def _check_token(self, conn, token) -> None:
        """A connection made with ``needs_token`` (a remote one) presents the engine's token."""
        if conn.needs_token and not (isinstance(token, str) and self.token
                                     and hmac.compare_digest(token.encode("utf-8", "replace"), self.token.encode())):
            log.warning("%s: refused: %s token", conn.name, "wrong" if token else "missing")
            raise handshake.Refused("unauthorized", "wrong or missing token")

    # --- jobs -----------------------------------------------------------------------------------

    def _submit(self, conn, msg: Message) -> None:
        job_id = job_id_of(msg)
        if self.closing:
            conn.send(error("engine_shutting_down", "the engine is shutting down", job_id=job_id))
            return None
        try:
            req = validate(request_of(msg))
            if not pipelines.available(req.mode):
                raise ValidationError("mode", f"mode {req.mode!r} is not available in this engine "
                                              f"(version {__version__})")
            if conn.needs_token:    # a remote client names installed models, never server paths
                from ..models import remote

                remote.check_request(req, self._models.models_dir if self._models else self._models_dir)
        except ValidationError as e:
            conn.send(error("invalid_parameter", str(e), job_id=job_id, parameter=e.parameter))
            return None
        job = Job(job_id, req, owner=conn, previews=bool(msg.get("previews", True)))
        job.control = self._control(job)

        def announce(pos):
            self.queue_news.accepted(conn, job_id, pos)
            conn.send(message("accepted", job_id=job_id, position=pos))

        try:
            self.queue.submit(job, announce=announce)
            job.hold, msg.hold = msg.hold, None     # its pixels stay reserved until it ends
        except DuplicateJob as e:
            # Without job_id: this error must not end the job that already has this id.
            conn.send(error("duplicate_job", str(e)))
        except QueueClosed as e:
            conn.send(error("engine_shutting_down", str(e), job_id=job_id))
        return None

    def _control(self, job: Job) -> JobControl:
        conn = job.owner

        def on_progress(step, total, phase):
            conn.send(message("progress", job_id=job.id, step=int(step), total=int(total), phase=str(phase)))

        def on_preview(rgb):
            h, w = int(rgb.shape[0]), int(rgb.shape[1])
            conn.send(preview(job.id, w, h, rgb.tobytes()), droppable=True)

        return JobControl(on_progress, on_preview if job.previews else None)

    def _cancel(self, conn, msg: Message) -> None:
        job_id = job_id_of(msg)
        if not self.queue.cancel(conn, job_id):
            log.info("%s: cancel of %s: no such job (already ended)", conn.name, job_id)
        return None

    def _cancel_all(self, conn, msg: Message) -> None:
        self.queue.cancel_owner(conn)
        return None

    def _execute(self, job: Job, device: str) -> Outcome:
        from ..models.memory import is_out_of_memory, run_with_memory_retry
        from ..models.resolver import ModelError
        from ..raster.pixels import results_in

        t0 = time.perf_counter()
        log.info("job %s (%s) starts on %s", job.id, job.request.mode, device)
        try:
            from ..models import loader

            if self._models is None or not loader.libraries_imported():
                job.control.set_phase("loading")  # the first job waits for the device probe and the libraries
            models = self.models()
            # Every import of the heavy libraries is finished before a job runs: diffusers' lazy imports
            # are not thread-safe, and the warm-up may be importing them right now (it holds the lock).
            loader.import_libraries()
            with results_in(self._result_maker(job)):
                res = run_with_memory_retry(lambda: pipelines.execute(job.request, models, job.control), models)
            outcome = Outcome("result", in_request_layout(job.request, res))
        except Cancelled:
            outcome = Outcome.cancelled()
        except ValidationError as e:
            outcome = Outcome.error("invalid_parameter", str(e), e.parameter)
        except ModelError as e:
            outcome = Outcome.error(getattr(e, "code", "model_error"), str(e))
        except Exception as e:
            log.exception("job %s failed", job.id)
            if is_out_of_memory(e):
                outcome = Outcome.error("out_of_memory", "not enough memory for this job, even with every other "
                                                         "model unloaded: try a smaller image or fewer images")
            else:  # the exception's text stays in the log: a client sees what happened, not Python's words
                outcome = Outcome.error("job_failed", "the job failed because of an internal error in the engine "
                                                      "(described in the engine's log)")
        log.info("job %s: %s%s after %.2f s", job.id, outcome.kind, f" ({outcome.code})" if outcome.code else "",
                 time.perf_counter() - t0)
        return outcome

    @staticmethod
    def _result_maker(job: Job):
        """Where the job's patches are made: straight in shared memory when its connection takes large
        payloads from there (no copy on sending, see core.link.bulk), else in plain memory."""
        where = getattr(job.owner, "bulk", None)
        if not where:
            return None
        return lambda shape, dtype: bulk.shared_array(where, shape, dtype, job.bulk_names)

    def _final(self, job: Job, outcome: Outcome) -> None:
        conn = job.owner
        if outcome.kind == "result":
            conn.send(result(job.id, outcome.result))
        elif outcome.kind == "cancelled":
            conn.send(message("cancelled", job_id=job.id))
        else:
            text = redact_paths(outcome.message) if conn.needs_token else outcome.message
            conn.send(error(outcome.code, text, job_id=job.id, parameter=outcome.parameter))
        bulk.release(job.bulk_names)    # patches made but never sent
        hold, job.hold = job.hold, None
        if hold is not None:
            hold.release()
        job.request = None              # its pixels go now, not whenever the job object is collected

    def _queue_changed(self) -> None:
        self.compile_gate.set_busy(len(self.queue) > 0)    # background compilations wait for an idle engine
        self.queue_news.changed()

    # --- models and capabilities -----------------------------------------------------------------

    def policy(self):
        with self._lock:
            if self._policy is None:
                from ..models.device import choose_policy, engine_wants_compile, probe

                self._policy = choose_policy(probe(), self._device or os.environ.get("DD_DEVICE") or None,
                                             self._dtype or os.environ.get("DD_DTYPE") or None,
                                             compile=engine_wants_compile(self._compile))
                log.info("device policy: %s", self._policy)
            return self._policy

    def models(self):
        with self._lock:
            if self._models is None:
                from ..models.manager import ModelManager

                self._models = ModelManager(self.policy(), models_dir=self._models_dir, hub_cache=self._hub_cache,
                                            capacity=self._capacity, compile_gate=self.compile_gate)
            if self._models.on_status is None:
                self._models.on_status = self._model_status
            if getattr(self._models, "compile_gate", False) is None:
                self._models.compile_gate = self.compile_gate
            return self._models

    def _model_status(self, status: dict) -> None:
        local = message("model_status", **status)
        remote = message("model_status", **{**status, "path": "", "message": redact_paths(str(status.get("message")
                                                                                             or ""))})
        self.broadcast(local, remote)

    @staticmethod
    def _capabilities_for(conn, caps: Capabilities) -> Message:
        """The capabilities message for ``conn``: a remote client sees models by name, not where they are."""
        if not conn.needs_token:
            return capabilities(caps)
        models = tuple({k: None if k == "path" else redact_paths(v) if isinstance(v, str) and k in ("message", "hint")
                        else v for k, v in m.items()} for m in caps.models)
        return capabilities(replace(caps, models=models))

    def scan_capabilities(self) -> Capabilities:
        from ..models.resolver import ModelError, resolve

        policy = self.policy()
        models = self.models()
        found = []
        for spec in CATALOG.values():
            entry = {"key": spec.key, "title": spec.title, "found": False, "path": None, "source": None,
                     "hint": spec.install_hint(), "modes": list(spec.modes)}
            try:
                r = resolve(spec.key, models_dir=models.models_dir, hub_cache=models.hub_cache)
                entry.update(found=True, path=str(r.path), source=r.source)
            except ModelError as e:
                entry["message"] = str(e)[:300]
            found.append(entry)
        found.append(self._lama_entry(models.models_dir))
        found += self._installed_entries(models.models_dir, models.hub_cache)
        have = {e["key"] for e in found if e["found"]}
        custom = {m for e in found if e.get("custom") for m in e["modes"]}
        modes = tuple(m for m in MODES if pipelines.available(m)
                      and (not MODE_MODELS.get(m) or have & set(MODE_MODELS[m]) or m in custom))
        reason = policy.reason + (f"; UNet compile: {policy.compile_reason}" if policy.compile_reason else "")
        caps = Capabilities(PROTOCOL_VERSION, __version__, policy.device, policy.dtype, reason,
                            tuple(found), modes)
        with self._lock:
            self._capabilities = caps
        return caps

    @staticmethod
    def _installed_entries(models_dir, hub_cache) -> list[dict]:
        """Imported models (``custom``) and the LoRA / embedding files of the models folder."""
        from ..contract import paths
        from ..models import inventory

        folder = models_dir or paths.models_dir()
        try:
            return inventory.custom_entries(folder, hub_cache) + inventory.adapter_entries(folder)
        except OSError as e:
            log.warning("listing the models folder %s failed: %s", folder, e)
            return []

    @staticmethod
    def _lama_entry(models_dir) -> dict:
        """The fast fill's optional LaMa weights (Fill works without them, with patches)."""
        from ..lama import weights
        from ..models.resolver import ModelError

        entry = {"key": "big-lama", "title": "LaMa (fast fill, optional)", "found": False, "path": None,
                 "source": None, "hint": weights.install_hint(), "modes": ["fill"], "optional": True}
        try:
            path = weights.find_weights(None, models_dir)
            entry.update(found=True, path=str(path), source="models_dir")
        except ModelError as e:  # ModelNotFound, or a refused pickle
            entry["message"] = str(e)[:300]
        except Exception:
            log.exception("looking for the LaMa weights failed")
            entry["message"] = "the LaMa weights could not be looked for (described in the engine's log)"
        return entry

    def _send_capabilities(self, conn, msg: Message) -> None:
        try:
            caps = self.scan_capabilities()
        except Exception:
            log.exception("capabilities scan failed")
            conn.send(error("model_error", "could not list devices and models (an internal error, described in "
                                           "the engine's log)"))
            return None
        conn.send(self._capabilities_for(conn, caps))
        return None

    def _start_warm_up(self) -> None:
        with self._lock:
            if self._warm_started:
                return
            self._warm_started = True
        threading.Thread(target=self._warm, name="warm-up", daemon=True).start()

    def _warm(self) -> None:
        """After the first hello: probe the device, list the models, announce them, then import the
        heavy libraries so the first job does not wait for them."""
        t0 = time.perf_counter()
        try:
            caps = self.scan_capabilities()
            self.broadcast_capabilities(caps)
            log.info("capabilities ready after %.2f s: %s, modes %s", time.perf_counter() - t0, caps.device,
                     ", ".join(caps.modes))
            if self._warm_up:
                from ..models import loader

                loader.import_libraries()
                log.info("libraries imported after %.2f s", time.perf_counter() - t0)
        except Exception:
            log.exception("warm-up failed")

    # --- heartbeats, broadcast, shutdown ----------------------------------------------------------

    def broadcast(self, msg: Message, remote: Message | None = None) -> None:
        """``msg`` to every ready connection (``remote`` instead to those of remote clients)."""
        with self._lock:
            conns = [c for c in self._connections if c.ready]
        for c in conns:
            c.send(remote if remote is not None and c.needs_token else msg)

    def broadcast_capabilities(self, caps: Capabilities) -> None:
        with self._lock:
            conns = [c for c in self._connections if c.ready]
        for c in conns:
            c.send(self._capabilities_for(c, caps))

    def _heartbeats(self) -> None:
        while not self.stopped.wait(0.05):
            now = time.monotonic()
            try:
                self.queue_news.send_due(now)
            except Exception:
                log.exception("sending queue positions failed")
            with self._lock:
                conns = list(self._connections)
            for c in conns:
                c.beat(now, lambda c=c: message("heartbeat", time=time.time(), running=self.queue.running(c),
                                                queued=len(self.queue)))

    def _shutdown(self, conn, msg: Message) -> str | None:
        if not self.allow_shutdown:
            conn.send(error("bad_message", "a shared engine cannot be stopped by a client"))
            return None
        self.closing = True
        conn.last_word(message("bye"))
        return "shutdown"

    def close(self, timeout: float = 3.0) -> bool:
        """Cancel every job, stop the workers; True if the running job stopped within ``timeout``."""
        self.closing = True
        done = self.queue.close(timeout)
        self.stopped.set()
        return done


def in_request_layout(req: JobRequest, res: JobResult) -> JobResult:
    """Every patch in the pixel layout of the request's image (or, without one, the layout named by
    ``options.output_format``), so the editor does no pixel math."""
    if req.image is not None and req.image.format in EDITOR_FORMATS:
        fmt, linear = req.image.format, req.image.linear
    elif req.image is None and req.options.output_format:
        fmt, linear = req.options.output_format, bool(req.options.output_linear)
    else:
        return res
    if all((p.image.format, p.image.linear) == (fmt, linear) for p in res.patches):
        return res
    from ..raster.pixels import convert_buffer

    patches = tuple(p if (p.image.format, p.image.linear) == (fmt, linear)
                    else replace(p, image=convert_buffer(p.image, fmt, linear)) for p in res.patches)
    return replace(res, patches=patches)
