"""Operator accounts, API tokens and the revocation list: files in the panel's data dir.

The data dir is a cluster path replicated to every node (panelsync), so a
node's limited panel knows the same operators and a node refuses a revoked
manager certificate. Files are JSON, written atomically, mode 0600.
Passwords are hashed with scrypt (memory-hard; n=2^14, r=8, p=1); API tokens
and session ids are random 256-bit values, stored as SHA-256.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import time

from clusterkit_panel.pki import write_private
from clusterkit_panel.store import digest

log = logging.getLogger("clusterkit.panel")

USERS = "users.json"
TOKENS = "tokens.json"
REVOKED = "revoked.json"
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}")
SCRYPT = {"n": 2 ** 14, "r": 8, "p": 1}
MIN_PASSWORD = 8


class AccountError(Exception):
    """A bad user or token name, a weak password, an unknown account."""


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    raw = hashlib.scrypt(password.encode(), salt=salt, dklen=32, **SCRYPT)
    b64 = base64.b64encode
    return f"scrypt${SCRYPT['n']}${SCRYPT['r']}${SCRYPT['p']}${b64(salt).decode()}${b64(raw).decode()}"


def verify_password(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, raw = stored.split("$")
        if scheme != "scrypt":
            return False
        expect = base64.b64decode(raw)
        got = hashlib.scrypt(password.encode(), salt=base64.b64decode(salt), n=int(n), r=int(r),
                             p=int(p), dklen=len(expect))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, expect)


class Accounts:
    """The account files of one host's copy of the panel data dir."""

    def __init__(self, data_dir: str):
        self.dir = data_dir
        self._cache: dict[str, tuple[float, dict]] = {}

    def _read(self, name: str) -> dict:
        path = os.path.join(self.dir, name)
        try:
            mtime = os.stat(path).st_mtime_ns
        except FileNotFoundError:
            return {}
        cached = self._cache.get(name)
        if cached and cached[0] == mtime:
            return cached[1]
        try:
            with open(path) as f:
                data = json.load(f)
            if not isinstance(data, dict):
                raise ValueError("not a JSON object")
        except (OSError, ValueError) as exc:
            log.error("cannot read %s (%s): treated as empty until it is fixed", path, exc)
            data = {}
        self._cache[name] = (mtime, data)
        return data

    def _write(self, name: str, data: dict) -> None:
        write_private(os.path.join(self.dir, name), json.dumps(data, indent=1, sort_keys=True).encode())
        self._cache.pop(name, None)

    # ----------------------------------------------------------------- users

    def users(self) -> dict:
        return self._read(USERS).get("users", {})

    def add_user(self, name: str, password: str, replace: bool = False) -> None:
        if not NAME.fullmatch(name):
            raise AccountError(f"{name!r} is not a valid user name (letters, digits, _.@-)")
        if len(password) < MIN_PASSWORD:
            raise AccountError(f"the password must have at least {MIN_PASSWORD} characters")
        data = self._read(USERS) or {"users": {}}
        if name in data["users"] and not replace:
            raise AccountError(f"user {name!r} exists (--replace sets a new password)")
        data = {"users": {**data["users"], name: {"hash": hash_password(password),
                                                  "created": time.time()}}}
        self._write(USERS, data)

    def remove_user(self, name: str) -> None:
        data = self._read(USERS) or {"users": {}}
        if name not in data["users"]:
            raise AccountError(f"no user named {name!r}")
        self._write(USERS, {"users": {k: v for k, v in data["users"].items() if k != name}})

    def check_password(self, name: str, password: str) -> bool:
        user = self.users().get(name)
        if user is None:
            verify_password(password, _dummy())  # same cost: no user-name oracle by timing
            return False
        return verify_password(password, user["hash"])

    # ---------------------------------------------------------------- tokens

    def tokens(self) -> dict:
        return self._read(TOKENS).get("tokens", {})

    def create_token(self, name: str) -> str:
        if not NAME.fullmatch(name):
            raise AccountError(f"{name!r} is not a valid token name (letters, digits, _.@-)")
        data = self.tokens()
        if any(t["name"] == name for t in data.values()):
            raise AccountError(f"a token named {name!r} exists (revoke it first)")
        token = "ckp_" + secrets.token_urlsafe(32)
        self._write(TOKENS, {"tokens": {**data, digest(token): {"name": name, "created": time.time()}}})
        return token

    def revoke_token(self, name: str) -> None:
        data = self.tokens()
        kept = {h: t for h, t in data.items() if t["name"] != name}
        if len(kept) == len(data):
            raise AccountError(f"no API token named {name!r}")
        self._write(TOKENS, {"tokens": kept})

    def token_name(self, token: str) -> str | None:
        entry = self.tokens().get(digest(token))
        return entry["name"] if entry else None

    # ------------------------------------------------------------ revocation

    def revoked(self) -> set[str]:
        return set(self._read(REVOKED).get("serials", []))

    def write_revoked(self, serials: list[str]) -> None:
        self._write(REVOKED, {"serials": sorted(set(serials)), "updated": time.time()})


@functools.cache
def _dummy() -> str:
    return hash_password("not a real password, only spends time")
