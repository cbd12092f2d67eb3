"""``models download``: fetch a catalogue model through huggingface_hub, verified and resumable.

- The hub's metadata (``model_info(files_metadata=True)``: sizes, LFS sha256, git blob ids) decides
  what is fetched (``hub_plan.plan_files``) and is the reference every file is checked against.
- Files go into the standard Hugging Face cache (blobs + snapshot links + ``refs/main``), where the
  engine's resolver finds them, or into a plain folder ``<models dir>/<key>/``.
- Free disk space is checked before anything is written.
- Weights (LFS files) are fetched into a partial file that survives an interruption; the next run
  continues it with an HTTP Range request.  Within one run, a dropped connection is resumed by
  huggingface_hub's ``http_get`` (also with Range).
- Every file, new or already present, is checked (size, sha256 or git blob id).  A file that does not
  match is fetched again; a model already in the cache costs no download.
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

from core.contract import atomic
from core.contract.catalog import ModelSpec

from .hub_plan import PlanError, RemoteFile, human, plan_files, total_size

PARTIAL_SUFFIX = ".dd-partial"
SPACE_MARGIN = 200 * 1000 * 1000   # bytes kept free beyond what the download needs
MAX_ATTEMPTS = 3                    # per file, when the content does not match the hub's checksum


DROPPED_RESUMES = 5   # a dropped connection is continued with a Range request this many times per fetch


class DownloadError(Exception):
    """One clear line for the user; ``code`` is the process exit status."""

    code = 1


class HubUnreachable(DownloadError):
    code = 4


class NotEnoughSpace(DownloadError):
    code = 5


class ChecksumError(DownloadError):
    code = 6


class WriteFailed(DownloadError):
    """A file could not be written here (a full disk, a read-only folder...): the message names it."""

    code = 2


# What a write on this machine fails with (as opposed to the network): these end the download at once.
LOCAL_WRITE_ERRNOS = {errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG,
                      getattr(errno, "EDQUOT", errno.ENOSPC)}


@dataclass
class FileOutcome:
    path: str
    size: int
    action: str            # reused | downloaded | resumed | linked (blob already in the cache)
    attempts: int = 0
    resumed_from: int = 0  # bytes already on disk when a partial download was continued


@dataclass
class DownloadReport:
    key: str
    repo_id: str
    commit: str
    folder: Path           # the snapshot folder or the plain folder the model now lives in
    files: list[FileOutcome] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def downloaded_bytes(self) -> int:
        return sum(f.size - f.resumed_from for f in self.files if f.action in ("downloaded", "resumed"))

    @property
    def reused_bytes(self) -> int:
        return sum(f.size for f in self.files if f.action in ("reused", "linked"))


# --- checksums ------------------------------------------------------------------------------------

def sha256_file(path: Path, chunk: int = 8 * 1024 * 1024) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def git_blob_id(path: Path) -> str:
    """The git object id of a file's content: sha1 of ``b"blob <size>\\0" + content``."""
    h = hashlib.sha1(usedforsecurity=False)
    h.update(b"blob %d\0" % path.stat().st_size)
    with open(path, "rb") as f:
        while block := f.read(1024 * 1024):
            h.update(block)
    return h.hexdigest()


def check_file(path: Path, rf: RemoteFile) -> str | None:
    """None when ``path`` matches the hub's metadata, else what is wrong."""
    try:
        size = path.stat().st_size
    except OSError:
        return "missing"
    if rf.size is not None and size != rf.size:
        return f"size {size} instead of {rf.size}"
    if rf.sha256:
        got = sha256_file(path)
        return None if got == rf.sha256 else f"sha256 {got[:12]}… instead of {rf.sha256[:12]}…"
    if rf.blob_id:
        got = git_blob_id(path)
        return None if got == rf.blob_id else f"git blob id {got[:12]}… instead of {rf.blob_id[:12]}…"
    return None


# --- the hub --------------------------------------------------------------------------------------

def hub_endpoint() -> str | None:
    """``HF_ENDPOINT`` read now (huggingface_hub reads it once, at import)."""
    value = os.environ.get("HF_ENDPOINT", "").strip().rstrip("/")
    return value or None


def connection_problem(e: Exception) -> str:
    """What went wrong with the connection, in words (the exception's own text goes to the log only)."""
    import logging

    logging.getLogger(__name__).info("connection problem: %s: %s", type(e).__name__, e)
    names = " ".join(c.__name__ for c in type(e).__mro__)
    if "Timeout" in names:
        return "the connection timed out"
    if "Connect" in names or isinstance(e, ConnectionRefusedError):
        return "no connection could be made"
    return "the connection was dropped"


def _hub_name(endpoint: str | None) -> str:
    return endpoint or "https://huggingface.co"


def _explain_hub_error(e: Exception, repo_id: str, endpoint: str | None) -> DownloadError:
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, RepositoryNotFoundError

    if isinstance(e, GatedRepoError):
        return DownloadError(f"{repo_id} is gated on {_hub_name(endpoint)}: accept its licence on the model page, "
                             f"log in with `hf auth login`, and run the command again")
    if isinstance(e, RepositoryNotFoundError):
        return DownloadError(f"{repo_id} was not found on {_hub_name(endpoint)} (or needs a login: `hf auth login`)")
    if isinstance(e, HfHubHTTPError):
        status = getattr(getattr(e, "response", None), "status_code", "?")
        return DownloadError(f"the hub {_hub_name(endpoint)} answered HTTP {status} for {repo_id}; "
                             f"try again later. Nothing was changed.")
    return HubUnreachable(f"cannot reach the model hub at {_hub_name(endpoint)} ({connection_problem(e)}). "
                          f"Check the internet connection (and HF_ENDPOINT / proxy settings), then run the "
                          f"command again; nothing was changed.")


def remote_files(repo_id: str, *, endpoint: str | None, token=None, revision: str = "main"
                 ) -> tuple[str, list[RemoteFile]]:
    """(commit, files with sizes and checksums) of a repo, from the hub's metadata."""
    from huggingface_hub import HfApi, constants

    if constants.HF_HUB_OFFLINE:
        raise DownloadError("HF_HUB_OFFLINE is set, so downloads are disabled: unset it (or set it to 0) to download")
    try:
        info = HfApi(endpoint=endpoint, token=token).model_info(repo_id, revision=revision, files_metadata=True)
    except Exception as e:
        raise _explain_hub_error(e, repo_id, endpoint) from None
    if not info.sha:
        raise DownloadError(f"the hub gave no commit for {repo_id}")
    files = [RemoteFile(s.rfilename, s.size, (s.lfs.sha256 if s.lfs else None) or None, s.blob_id)
             for s in (info.siblings or [])]
    return info.sha, files


# --- destinations ---------------------------------------------------------------------------------

def storage_folder(cache_dir: Path, repo_id: str) -> Path:
    return Path(cache_dir) / ("models--" + repo_id.replace("/", "--"))


class CacheTarget:
    """The Hugging Face cache layout (huggingface_hub creates the snapshot links)."""

    def __init__(self, cache_dir: Path, repo_id: str, commit: str, endpoint, token):
        self.cache_dir, self.repo_id, self.commit, self.endpoint, self.token = cache_dir, repo_id, commit, endpoint, token
        self.storage = storage_folder(cache_dir, repo_id)
        self.folder = self.storage / "snapshots" / commit

    def path(self, rf: RemoteFile) -> Path:
        return self.folder / rf.path

    def blob(self, rf: RemoteFile) -> Path | None:
        return self.storage / "blobs" / rf.sha256 if rf.sha256 else None

    def partial(self, rf: RemoteFile) -> Path:
        return self.storage / "blobs" / (rf.sha256 + PARTIAL_SUFFIX)

    def remove(self, rf: RemoteFile) -> None:
        p = self.path(rf)
        if p.is_symlink() or p.exists():
            target = p.resolve() if p.is_symlink() else None
            p.unlink()
            if target is not None and target.exists():
                target.unlink()

    def fetch_small(self, rf: RemoteFile, tqdm_class=None) -> None:
        from huggingface_hub import hf_hub_download

        hf_hub_download(self.repo_id, rf.path, revision=self.commit, cache_dir=str(self.cache_dir),
                        endpoint=self.endpoint, token=self.token)

    def install_blob(self, rf: RemoteFile, verified: Path) -> None:
        """Move a verified weight into ``blobs/<sha256>`` and let huggingface_hub link it into the snapshot."""
        atomic.publish(verified, self.blob(rf))
        self.link(rf)

    def link(self, rf: RemoteFile) -> None:
        from huggingface_hub import hf_hub_download

        hf_hub_download(self.repo_id, rf.path, revision=self.commit, cache_dir=str(self.cache_dir),
                        endpoint=self.endpoint, token=self.token)

    def finish(self) -> None:
        atomic.write_text(self.storage / "refs" / "main", self.commit, parents=True)


class FolderTarget:
    """A plain diffusers folder (``--models-dir``): the app's own models folder layout."""

    def __init__(self, folder: Path, repo_id: str, commit: str, endpoint, token):
        self.folder, self.repo_id, self.commit, self.endpoint, self.token = Path(folder), repo_id, commit, endpoint, token
        self.work = self.folder / ".cache" / "diffusion-dock"

    def path(self, rf: RemoteFile) -> Path:
        return self.folder / rf.path

    def blob(self, rf: RemoteFile) -> Path | None:
        return None

    def partial(self, rf: RemoteFile) -> Path:
        return self.work / (rf.sha256 + PARTIAL_SUFFIX)

    def remove(self, rf: RemoteFile) -> None:
        self.path(rf).unlink(missing_ok=True)

    def fetch_small(self, rf: RemoteFile, tqdm_class=None) -> None:
        from huggingface_hub import hf_hub_download

        hf_hub_download(self.repo_id, rf.path, revision=self.commit, local_dir=str(self.folder),
                        endpoint=self.endpoint, token=self.token, force_download=True)

    def install_blob(self, rf: RemoteFile, verified: Path) -> None:
        dst = self.path(rf)
        atomic.make_parents(dst)
        atomic.publish(verified, dst)

    def link(self, rf: RemoteFile) -> None:  # pragma: no cover - folders have no shared blobs
        raise AssertionError

    def finish(self) -> None:
        atomic.write_text(self.work / "commit", self.commit, parents=True)


# --- fetching ---------------------------------------------------------------------------------------

def fetch_resumable(target, rf: RemoteFile, label: str, *, endpoint, token) -> int:
    """Fetch an LFS file into its partial file, continuing what an earlier run left; returns the bytes
    that were already there.  The partial file is kept when the transfer fails.  huggingface_hub's
    public API only: its metadata call, its HTTP session and its error checks; a ``Range`` request
    continues the partial file."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_url
    from huggingface_hub.errors import HfHubHTTPError
    from huggingface_hub.utils import build_hf_headers

    partial = target.partial(rf)
    partial.parent.mkdir(parents=True, exist_ok=True)
    url = hf_hub_url(target.repo_id, rf.path, revision=target.commit, endpoint=endpoint)
    import inspect

    extra = {"endpoint": endpoint} if "endpoint" in inspect.signature(get_hf_file_metadata).parameters else {}
    meta = get_hf_file_metadata(url, token=token, **extra)
    location = meta.location or url
    headers = build_hf_headers(token=token)
    if urlparse(location).netloc != urlparse(url).netloc:
        headers.pop("authorization", None)  # never send the token to a CDN
    have = partial.stat().st_size if partial.exists() else 0
    if rf.size is not None and have > rf.size:
        have = 0
    with _open_partial(partial, "r+b" if partial.exists() else "wb") as f:
        f.truncate(have)
        f.seek(have)
        resumes = 0
        while rf.size is None or f.tell() < rf.size:
            try:
                have = _stream_into(f, location, dict(headers), rf.size, label)
                break
            except (HfHubHTTPError, OSError):
                raise
            except Exception as e:   # the connection dropped: continue from where it stopped
                resumes += 1
                if resumes > DROPPED_RESUMES:
                    raise
                log_dropped(rf.path, f.tell(), e)
        f.flush()
        os.fsync(f.fileno())   # on disk before it is checked and renamed into place
    return have


def _stream_into(f, location: str, headers: dict, size: int | None, label: str) -> int:
    """GET ``location`` from the position of ``f`` on (a ``Range`` request when it is not 0), writing
    into ``f``; returns the position it started from (0 when the server sent the whole file again)."""
    from huggingface_hub import constants, get_session
    from huggingface_hub.utils import are_progress_bars_disabled, hf_raise_for_status
    from tqdm import tqdm

    from .setup_run import file_reporter

    have = f.tell()
    if have:
        headers["Range"] = f"bytes={have}-"
    with get_session().stream("GET", location, headers=headers, follow_redirects=True,
                              timeout=constants.HF_HUB_DOWNLOAD_TIMEOUT) as response:
        if response.status_code >= 400:
            response.read()
        hf_raise_for_status(response)
        if have and response.status_code != 206:     # the server sent the whole file again
            f.seek(0)
            f.truncate(0)
            have = 0
        with tqdm(total=size, initial=have, unit="B", unit_scale=True, unit_divisor=1024, desc=label,
                  disable=are_progress_bars_disabled(), file=sys.stderr, leave=False) as bar:
            report = file_reporter(label, size)     # the dock's setup: bytes as events
            for chunk in response.iter_bytes():    # as it arrives: a dropped connection loses nothing received
                f.write(chunk)
                bar.update(len(chunk))
                if report is not None:
                    report(f.tell())
            if report is not None:
                report(f.tell(), True)
    return have


def log_dropped(path: str, at: int, e: Exception) -> None:
    import logging

    logging.getLogger(__name__).info("%s: the connection dropped after %d bytes (%s); continuing", path, at,
                                     type(e).__name__)


def _open_partial(path: Path, mode: str):
    """The partial file of a weight (tests put a full disk in between)."""
    return open(path, mode)


def _existing_ancestor(p: Path) -> Path:
    p = Path(p).absolute()
    while not p.exists() and p.parent != p:
        p = p.parent
    return p


def check_space(needed: int, where: Path, disk_usage=shutil.disk_usage) -> int:
    """Raise NotEnoughSpace unless ``needed`` bytes (plus a margin) fit at ``where``; returns free bytes."""
    free = disk_usage(str(_existing_ancestor(where))).free
    if needed > 0 and needed + SPACE_MARGIN > free:
        raise NotEnoughSpace(f"not enough disk space at {_existing_ancestor(where)}: the download needs "
                             f"{human(needed)} (+{human(SPACE_MARGIN)} margin) but only {human(free)} is free. "
                             f"Free some space or choose another place with --models-dir DIR (or HF_HOME).")
    return free


def download_model(spec: ModelSpec, *, cache_dir: Path | None = None, models_dir: Path | None = None,
                   config_only: bool = False, endpoint: str | None = None, token=None, revision: str = "main",
                   log=None, disk_usage=shutil.disk_usage) -> DownloadReport:
    """Download ``spec`` into the HF cache (default) or ``models_dir/<key>``; see the module doc."""
    from core.models.hub import hf_hub_cache

    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    endpoint = endpoint if endpoint is not None else hub_endpoint()
    t0 = time.monotonic()
    commit, files = remote_files(spec.repo_id, endpoint=endpoint, token=token, revision=revision)
    try:
        wanted = plan_files(spec.pipeline, files, weights=not config_only, only=spec.files)
    except PlanError as e:
        raise DownloadError(f"{spec.repo_id}: {e}") from None
    if models_dir is not None:
        folder = Path(models_dir) / ("configs/" + spec.key if config_only else spec.key)
        target = FolderTarget(folder, spec.repo_id, commit, endpoint, token)
    else:
        target = CacheTarget(Path(cache_dir or hf_hub_cache()), spec.repo_id, commit, endpoint, token)
    report = DownloadReport(spec.key, spec.repo_id, commit, target.folder)

    # What is already here: verified files are kept, the rest is (re)fetched.
    present = [rf for rf in wanted if target.path(rf).exists()]
    if present:
        log(f"{spec.key}: checking {len(present)} files already here ({human(total_size(present))}) against the "
            f"hub's checksums")
    todo: list[tuple[RemoteFile, int]] = []
    for rf in wanted:
        dst = target.path(rf)
        if dst.exists():
            problem = check_file(dst, rf)
            if problem is None:
                report.files.append(FileOutcome(rf.path, rf.size or 0, "reused"))
                continue
            log(f"  {rf.path}: {problem}: it will be fetched again")
            target.remove(rf)
        blob = target.blob(rf)
        if blob is not None and blob.exists():
            if check_file(blob, rf) is None:
                target.link(rf)
                report.files.append(FileOutcome(rf.path, rf.size or 0, "linked"))
                continue
            blob.unlink()
        have = 0
        if rf.lfs and target.partial(rf).exists():
            have = min(target.partial(rf).stat().st_size, rf.size or 0)
        todo.append((rf, have))

    total = total_size(wanted)
    needed = sum((rf.size or 0) - have for rf, have in todo)
    free = check_space(needed, target.folder, disk_usage)
    what = "configs" if config_only else "files"
    log(f"{spec.key} ({spec.repo_id} @ {commit[:10]}): {len(wanted)} {what}, {human(total)}; "
        + (f"{human(total - needed)} already here; downloading {human(needed)} into {target.folder} "
           f"({human(free)} free)" if todo else f"all present and verified in {target.folder}"))

    weights = [rf for rf, _ in todo if rf.lfs]
    for rf, have in todo:
        # One progress bar per weight file ("unet [2/3]"); configs are small and come without bars.
        label = f"{rf.path.split('/')[0]} [{weights.index(rf) + 1}/{len(weights)}]" if rf.lfs else rf.path
        with _quiet_bars(not rf.lfs):
            outcome = _fetch_verified(target, rf, label, have, endpoint=endpoint, token=token, log=log)
        report.files.append(outcome)
    try:
        target.finish()
    except atomic.WriteError as e:
        raise WriteFailed(f"{e}. Every file is in place: run the same command again to finish.") from None
    report.seconds = time.monotonic() - t0
    return report


class _quiet_bars:
    """Switch huggingface_hub's progress bars off for a block (small files), then back as they were."""

    def __init__(self, quiet: bool):
        self.quiet = quiet

    def __enter__(self):
        from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars

        self.was = are_progress_bars_disabled()
        if self.quiet and not self.was:
            disable_progress_bars()

    def __exit__(self, *exc):
        from huggingface_hub.utils import enable_progress_bars

        if self.quiet and not self.was:
            enable_progress_bars()


def _fetch_verified(target, rf: RemoteFile, label: str, have: int, *, endpoint, token, log) -> FileOutcome:
    for attempt in range(1, MAX_ATTEMPTS + 1):
        try:
            if rf.lfs:
                resumed = fetch_resumable(target, rf, label, endpoint=endpoint, token=token)
                problem = check_file(target.partial(rf), rf)
                if problem is None:
                    target.install_blob(rf, target.partial(rf))
                    action = "resumed" if resumed else "downloaded"
                    return FileOutcome(rf.path, rf.size or 0, action, attempt, resumed)
                target.partial(rf).unlink(missing_ok=True)
            else:
                target.fetch_small(rf)
                problem = check_file(target.path(rf), rf)
                if problem is None:
                    return FileOutcome(rf.path, rf.size or 0, "downloaded", attempt)
                target.remove(rf)
        except DownloadError:
            raise
        except Exception as e:
            from huggingface_hub.errors import HfHubHTTPError

            kept = target.partial(rf) if rf.lfs and target.partial(rf).exists() else None
            more = (f" {human(kept.stat().st_size)} of it are kept: running the same command again continues "
                    f"from there." if kept and kept.stat().st_size else " Run the same command again.")
            if isinstance(e, atomic.WriteError):
                raise WriteFailed(f"{e}.{more}") from None
            if isinstance(e, OSError) and e.errno in LOCAL_WRITE_ERRNOS:
                where = e.filename or (kept or target.partial(rf) if rf.lfs else target.path(rf))
                raise WriteFailed(f"cannot write {where}: {atomic.reason_of(e)}.{more}") from None
            if isinstance(e, HfHubHTTPError):
                status = getattr(getattr(e, "response", None), "status_code", "?")
                raise DownloadError(f"the hub {_hub_name(endpoint)} answered HTTP {status} while sending {rf.path}; "
                                    f"try again later.{more}") from None
            raise HubUnreachable(f"the download of {rf.path} from {_hub_name(endpoint)} was interrupted "
                                 f"({connection_problem(e)}).{more}") from None
        log(f"  {rf.path}: checksum mismatch ({problem}); fetching it again")
    raise ChecksumError(f"{rf.path}: still does not match the hub's checksum after {MAX_ATTEMPTS} downloads; "
                        f"the hub or a proxy may be serving damaged data. Try again later.")
