"""A local Ray cluster on 127.0.0.1 and a gateway in front of it, for the ``cluster`` tests and the benchmark.

``RayHead`` runs ``ray start --head --block`` in its own process group (so every process Ray starts,
replicas included, is stopped with it, by that group's id); ``RayNode`` adds a second node the same way
(a test loses it by killing its group); ``Gateway`` runs ``python -m core serve
--cluster`` against it with a config and a tokens file of its own.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_group(proc: subprocess.Popen, grace: float = 15.0) -> None:
    """Stop ``proc`` and everything in its process group (which it leads): TERM, then KILL."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)   # whatever of the group is left (Ray's workers)
    except ProcessLookupError:
        pass
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        pass


class RayHead:
    """``ray start --head`` on 127.0.0.1 with ``num_cpus`` logical CPUs and no GPU, no dashboard."""

    def __init__(self, num_cpus: int = 4, env: dict | None = None):
        self.port = free_port()
        self.temp = tempfile.mkdtemp(prefix="ddray", dir="/tmp")    # short: Ray's socket paths must fit
        self.log = open(Path(self.temp) / "head.log", "w+")
        ray = Path(sys.executable).with_name("ray")
        env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "PYTHONPATH": str(ROOT), **(env or {})}
        self.proc = subprocess.Popen(
            [str(ray), "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={self.port}",
             f"--num-cpus={num_cpus}", "--num-gpus=0", "--include-dashboard=false", "--disable-usage-stats",
             "--object-store-memory=268435456",
             f"--temp-dir={self.temp}"],
            cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        self.address = f"127.0.0.1:{self.port}"

    def wait_ready(self, timeout: float = 180.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ray start exited {self.proc.returncode}: {self.output()[-2000:]}")
            if "Ray runtime started" in self.output():
                return
            time.sleep(0.5)
        raise TimeoutError(f"the Ray head did not start within {timeout:g} s: {self.output()[-2000:]}")

    def output(self) -> str:
        self.log.flush()
        return (Path(self.temp) / "head.log").read_text(errors="replace")

    def stop(self) -> None:
        stop_group(self.proc)
        self.log.close()
        shutil.rmtree(self.temp, ignore_errors=True)


class RayNode:
    """A second Ray node on this machine: ``ray start --address=HEAD --block`` on 127.0.0.1 in its own process
    group. ``lose()`` kills the whole group at once (raylet, object store, agents, the replicas on it) with
    SIGKILL, as when a machine loses its power or network: nothing on it says goodbye to the cluster."""

    def __init__(self, head: RayHead, num_cpus: int = 1, env: dict | None = None):
        self.log = open(Path(head.temp) / f"node-{free_port()}.log", "w+")
        ray = Path(sys.executable).with_name("ray")
        env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "PYTHONPATH": str(ROOT), **(env or {})}
        self.proc = subprocess.Popen(
            [str(ray), "start", f"--address={head.address}", "--block", "--node-ip-address=127.0.0.1",
             f"--num-cpus={num_cpus}", "--num-gpus=0", "--disable-usage-stats", "--object-store-memory=134217728"],
            cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)

    def wait_ready(self, timeout: float = 180.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ray start (node) exited {self.proc.returncode}: {self.output()[-2000:]}")
            if "Ray runtime started" in self.output():
                return
            time.sleep(0.5)
        raise TimeoutError(f"the Ray node did not start within {timeout:g} s: {self.output()[-2000:]}")

    def output(self) -> str:
        self.log.flush()
        self.log.seek(0)
        return self.log.read()

    def processes(self) -> set[int]:
        """The node's processes: ``ray start`` and its descendants (Ray's workers have their own sessions)."""
        children: dict[int, list[int]] = {}
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                except (OSError, IndexError, ValueError):
                    continue
                children.setdefault(ppid, []).append(int(entry.name))
        found, todo = set(), [self.proc.pid]
        while todo:
            pid = todo.pop()
            if pid not in found:
                found.add(pid)
                todo += children.get(pid, [])
        return found

    def holds(self, pid: int) -> bool:
        """Whether process ``pid`` (a replica's) runs on this node."""
        return pid in self.processes()

    def lose(self) -> None:
        """Every process of the node killed at once (SIGKILL)."""
        for pid in self.processes():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait(30)

    def stop(self) -> None:
        stop_group(self.proc, grace=5.0)
        self.log.close()


def cluster_yaml(path: Path, tiny_root: Path, *, replicas=2, models=("sd2-inpainting",),
                 max_models: int = 1, max_queued: int = 5, app: str = "diffusion-dock-test", extra_env=None) -> Path:
    import json

    env = {"DD_MODELS_DIR": str(tiny_root), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": str(ROOT),
           "DD_LOG_DIR": str(path.parent / "replica-logs"), "DD_CACHE_DIR": str(path.parent / "replica-cache"),
           **(extra_env or {})}
    cfg = {"app": app, "replicas": replicas, "num_gpus": 0, "num_cpus": 1, "device": "cpu",
           "models": list(models), "max_models_per_replica": max_models, "max_queued_per_artist": max_queued,
           "retries": 1, "runtime_env": {"env_vars": env}}
    path.write_text(json.dumps(cfg, indent=1))      # JSON is YAML
    return path


class Gateway:
    """``python -m core serve --listen 127.0.0.1:0 --cluster ADDRESS`` (TLS when given a certificate)."""

    def __init__(self, address: str, config: Path, tokens: Path, env: dict, certs=None, timeout: float = 900.0):
        args = ["--listen", "127.0.0.1:0", "--cluster", address, "--cluster-config", str(config),
                "--tokens", str(tokens), "--heartbeat", "0.2"]
        if certs:
            args += ["--cert", str(certs[0]), "--key", str(certs[1])]
        self.proc = subprocess.Popen([sys.executable, "-m", "core", "serve", *args], cwd=ROOT,
                                     env={**os.environ, **env, "PYTHONPATH": str(ROOT)},
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     start_new_session=True)
        self.lines: list[str] = []
        self.errors: list[str] = []
        threading.Thread(target=self._read, args=(self.proc.stdout, self.lines), daemon=True).start()
        threading.Thread(target=self._read, args=(self.proc.stderr, self.errors), daemon=True).start()
        deadline = time.monotonic() + timeout
        while not any("serving on" in line for line in self.lines):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the gateway did not start: {self.lines} {''.join(self.errors)[-3000:]}")
            time.sleep(0.2)
        self.url = next(line for line in self.lines if "serving on" in line).split("serving on ")[1].strip()
        self.cafile = str(certs[0]) if certs else None

    @staticmethod
    def _read(stream, into) -> None:
        for line in stream:
            into.append(line)

    def stop(self) -> int | None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                pass
        code = self.proc.poll()
        stop_group(self.proc, grace=1.0)
        return code
