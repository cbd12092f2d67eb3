"""Per-artist tokens for the gateway: ``python -m core serve tokens add NAME | list | revoke NAME``.

A token reads ``dd1_<id>_<secret>``: the id finds the artist's entry, the secret is checked against its
scrypt hash (``hashlib.scrypt``, a random 16-byte salt per token, n=2**14, r=8, p=1).  The file keeps the
hashes only, never a token; it is written whole (``core.contract.atomic``) with mode 0600 into the app's
config folder (``tokens.json`` in ``paths.config_dir()``, ``DD_CONFIG_DIR`` overrides).  A token may
expire; an admin token sees and cancels every artist's jobs.  The gateway notices a changed file within
seconds: a revoked or expired token's connections are closed.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import os
import re
import secrets
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from ..contract import paths
from ..contract.atomic import WriteError, write_text

FILE_NAME = "tokens.json"
PREFIX = "dd1"
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
SCRYPT = {"n": 1 << 14, "r": 8, "p": 1}


def default_path() -> Path:
    return paths.config_dir() / FILE_NAME


@dataclass(frozen=True)
class Artist:
    """Who a connection belongs to."""

    name: str
    admin: bool = False
    token_id: str = ""
    expires: float | None = None


class TokenError(ValueError):
    """Refused: ``reason`` is "wrong", "expired" or "revoked" (for the log and the error line)."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


def _hash(secret: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(secret.encode("utf-8"), salt=salt, n=n, r=r, p=p, dklen=32)


class TokenStore:
    """The tokens file.  ``verify`` is thread-safe; the file is re-read when it changes on disk."""

    def __init__(self, path: Path | None = None):
        self.path = Path(path) if path is not None else default_path()
        self._lock = threading.Lock()
        self._stamp: tuple | None = None
        self._entries: dict[str, dict] = {}
        self._verified: dict[str, str] = {}     # sha256(token) -> token id, after one scrypt check

    # --- reading ------------------------------------------------------------------------------------

    def _file_stamp(self):
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def reload(self) -> bool:
        """Re-read the file if it changed; True when it did."""
        stamp = self._file_stamp()
        with self._lock:
            if stamp == self._stamp and self._stamp is not None:
                return False
            self._entries = {e["id"]: e for e in self._read()}
            self._stamp = stamp
            self._verified = {k: v for k, v in self._verified.items() if v in self._entries}
            return True

    def _read(self) -> list[dict]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return []
        except (OSError, ValueError) as e:
            raise TokenError("file", f"cannot read the tokens file {self.path}: {e}") from None
        entries = data.get("tokens") if isinstance(data, dict) else None
        if not isinstance(entries, list):
            raise TokenError("file", f"the tokens file {self.path} has no 'tokens' list")
        return [e for e in entries if isinstance(e, dict) and isinstance(e.get("id"), str)]

    def entries(self) -> list[dict]:
        self.reload()
        with self._lock:
            return sorted(self._entries.values(), key=lambda e: e["name"])

    def verify(self, token, now: float | None = None) -> Artist:
        """The artist ``token`` belongs to, or TokenError."""
        self.reload()
        now = time.time() if now is None else now
        parts = token.split("_", 2) if isinstance(token, str) else []    # the secret may hold "_" too
        if len(parts) != 3 or parts[0] != PREFIX or not parts[2] or len(token) > 200:
            raise TokenError("wrong", "wrong or missing token")
        _, token_id, secret = parts
        with self._lock:
            entry = self._entries.get(token_id)
            digest = hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()
            known = self._verified.get(digest) == token_id
        if entry is None:
            raise TokenError("wrong", "wrong or missing token")
        if not known:
            try:
                want = bytes.fromhex(entry["hash"])
                got = _hash(secret, bytes.fromhex(entry["salt"]), int(entry.get("n", SCRYPT["n"])),
                            int(entry.get("r", SCRYPT["r"])), int(entry.get("p", SCRYPT["p"])))
            except (KeyError, ValueError, TypeError):
                raise TokenError("wrong", "wrong or missing token") from None
            if not hmac.compare_digest(want, got):
                raise TokenError("wrong", "wrong or missing token")
            with self._lock:
                self._verified[digest] = token_id
        artist = _artist(entry)
        if artist.expires is not None and now >= artist.expires:
            raise TokenError("expired", f"the token of {artist.name} expired: ask for a new one")
        return artist

    def still_valid(self, artist: Artist, now: float | None = None) -> TokenError | None:
        """None while ``artist``'s token stands; else why not (revoked or expired)."""
        self.reload()
        now = time.time() if now is None else now
        with self._lock:
            entry = self._entries.get(artist.token_id)
        if entry is None:
            return TokenError("revoked", f"the token of {artist.name} was revoked")
        current = _artist(entry)
        if current.expires is not None and now >= current.expires:
            return TokenError("expired", f"the token of {artist.name} expired: ask for a new one")
        return None

    # --- changing -----------------------------------------------------------------------------------

    def add(self, name: str, *, admin: bool = False, expires: float | None = None) -> str:
        """Make a token for ``name``; returns it (the only time it exists in clear)."""
        if not isinstance(name, str) or not NAME_RE.match(name):
            raise TokenError("name", "NAME must be 1–64 letters, digits or . _ @ - (starting with a letter or "
                                     f"digit), got {name!r}")
        entries = self._read()
        if any(e.get("name") == name for e in entries):
            raise TokenError("name", f"{name} already has a token: revoke it first")
        token_id = secrets.token_hex(6)
        secret = secrets.token_urlsafe(32)
        salt = secrets.token_bytes(16)
        entries.append({"name": name, "id": token_id, "kdf": "scrypt", **SCRYPT, "salt": salt.hex(),
                        "hash": _hash(secret, salt, **SCRYPT).hex(), "admin": bool(admin),
                        "created": round(time.time(), 3), "expires": expires})
        self._write(entries)
        return f"{PREFIX}_{token_id}_{secret}"

    def revoke(self, name: str) -> bool:
        entries = self._read()
        kept = [e for e in entries if e.get("name") != name]
        if len(kept) == len(entries):
            return False
        self._write(kept)
        return True

    def _write(self, entries: list[dict]) -> None:
        text = json.dumps({"version": 1, "tokens": entries}, indent=1, sort_keys=True) + "\n"
        write_text(self.path, text, permissions=0o600, parents=True)
        self.reload()


def _artist(entry: dict) -> Artist:
    expires = entry.get("expires")
    return Artist(str(entry.get("name")), bool(entry.get("admin")), entry["id"],
                  float(expires) if isinstance(expires, (int, float)) and not isinstance(expires, bool) else None)


# --- python -m core serve tokens ... -------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m core serve tokens",
                                 description="Per-artist tokens of the cluster gateway (stored hashed).")
    ap.add_argument("--file", type=Path, help=f"the tokens file (default: {FILE_NAME} in the app's config folder)")
    sub = ap.add_subparsers(dest="action", required=True)
    p = sub.add_parser("add", help="make a token for an artist and print it once")
    p.add_argument("name")
    p.add_argument("--admin", action="store_true", help="this token sees and cancels every artist's jobs")
    p.add_argument("--days", type=float, help="the token expires after this many days (default: never)")
    sub.add_parser("list", help="artists with a token (names, admin, created, expiry: never the tokens)")
    p = sub.add_parser("revoke", help="remove an artist's token; their connections are closed")
    p.add_argument("name")
    return ap


def main(argv) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else 2
    store = TokenStore(args.file)
    try:
        if args.action == "add":
            if args.days is not None and not 0 < args.days <= 36500:
                raise TokenError("days", f"--days must be a number of days from 0 to 36500, got {args.days:g}")
            expires = time.time() + args.days * 86400 if args.days is not None else None
            token = store.add(args.name, admin=args.admin, expires=expires)
            print(f"token for {args.name}{' (admin)' if args.admin else ''}: {token}")
            print("Give it to the artist now: it is shown only this once (the file keeps its hash).")
            return 0
        if args.action == "list":
            entries = store.entries()
            if not entries:
                print(f"no tokens in {store.path}")
            for e in entries:
                exp = e.get("expires")
                when = "never" if exp is None else time.strftime("%Y-%m-%d %H:%M", time.localtime(exp))
                made = time.strftime("%Y-%m-%d", time.localtime(e.get("created", 0)))
                print(f"{e['name']:<24} {'admin' if e.get('admin') else 'artist':<6}  created {made}  expires {when}")
            return 0
        if store.revoke(args.name):
            print(f"revoked the token of {args.name}")
            return 0
        print(f"error: {args.name} has no token", file=sys.stderr)
        return 2
    except (TokenError, WriteError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
