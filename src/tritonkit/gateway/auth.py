"""API keys: a store of SHA-256 hashes, constant-time checks, and the ASGI middleware that
guards `/predict` (callers' keys) and `/admin` (admin keys), and limits per client address the
requests that come without a valid key.

A key is `tk_` + 32 random bytes (URL-safe base64): random enough that a plain SHA-256 is the
right hash (no password stretching needed), and the store never holds a key itself. The key
travels in the `X-API-Key` header (or `Authorization: Bearer <key>`); it is never logged::

    key = add_key(Path(".cache/gateway/keys.json"), name="billing", role="caller")  # shown once
    store = KeyStore.load(Path(".cache/gateway/keys.json"))
    store.authenticate(key)        # ApiKey(name="billing", role="caller"), or None
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import os
import secrets
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from tritonkit.gateway.errors import Forbidden, Unauthorized, send_problem
from tritonkit.gateway.settings import DEV_KEY_FILES

if TYPE_CHECKING:
    from tritonkit.gateway.ratelimit import RateLimits

Role = Literal["caller", "admin"]
KEY_HEADER = "X-API-Key"
_KEY_HEADER_LOWER = KEY_HEADER.lower().encode()
_PREFIX = "tk_"
_CHALLENGE = {"WWW-Authenticate": f'ApiKey header="{KEY_HEADER}"'}


@dataclasses.dataclass(frozen=True)
class ApiKey:
    """Who a valid key belongs to: the name is what logs, metrics and rate limits use."""

    name: str
    role: Role


def generate_key() -> str:
    return _PREFIX + secrets.token_urlsafe(32)


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class KeyStore:
    """The hashes of the valid keys, loaded from a JSON file."""

    def __init__(self, entries: list[tuple[bytes, ApiKey]]) -> None:
        self._entries = entries

    @classmethod
    def load(cls, path: Path) -> KeyStore:
        """Read `{"keys": [{"name", "role", "sha256"}]}`; a missing file is an empty store."""
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            return cls([])
        entries = []
        for item in data.get("keys", []):
            role = item.get("role", "caller")
            if role not in ("caller", "admin"):
                raise ValueError(f"{path}: key {item.get('name')!r} has unknown role {role!r}")
            entries.append((bytes.fromhex(item["sha256"]), ApiKey(str(item["name"]), role)))
        return cls(entries)

    def __len__(self) -> int:
        return len(self._entries)

    def authenticate(self, presented: str | None) -> ApiKey | None:
        """The key's owner, or None. Every stored hash is compared, each in constant time, so
        the time taken tells nothing about which key (or how much of one) matched."""
        if not presented:
            return None
        digest = hashlib.sha256(presented.encode(errors="replace")).digest()
        found = None
        for stored, owner in self._entries:
            if hmac.compare_digest(stored, digest):
                found = owner
        return found


def _write_store(path: Path, data: dict[str, Any], mode: int = 0o600) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}")
    partial.write_text(json.dumps(data, indent=2) + "\n")
    os.chmod(partial, mode)
    os.replace(partial, path)


def add_key(path: Path, *, name: str, role: Role = "caller", key: str | None = None,
            development: bool = False, mode: int = 0o600) -> str:
    """Add a key to the store (its hash only) and return the key, which is not kept anywhere.
    A `development` key is marked so: a gateway outside dev mode refuses a store holding one.
    `mode`: the store file's permissions."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        data = {"keys": []}
    if any(item["name"] == name for item in data["keys"]):
        raise ValueError(f"{path} already has a key named {name!r}: pick another name")
    key = key or generate_key()
    entry: dict[str, Any] = {"name": name, "role": role, "sha256": key_hash(key)}
    if development:
        entry["development"] = True
    data["keys"].append(entry)
    _write_store(path, data, mode)
    return key


def ensure_dev_keys(keys_file: Path) -> dict[str, str]:
    """The development keys, created on first use: {"caller": key, "admin": key}.

    For development only: the plain keys are kept in `dev-api-key` and `dev-admin-key`
    (mode 0600) beside the store, so `make api-key` can print them again, and the store marks
    them `development`: a gateway outside dev mode refuses to start on such a store. Production
    keys are made with `python -m tritonkit.gateway.cli add-key` (or `make production-secrets`),
    which shows a key once and keeps only its hash.
    """
    keys: dict[str, str] = {}
    roles: tuple[tuple[Role, str], ...] = (("caller", "dev"), ("admin", "dev-admin"))
    for role, name in roles:
        plain = keys_file.parent / DEV_KEY_FILES[0 if role == "caller" else 1]
        store = KeyStore.load(keys_file)
        if plain.exists():
            key = plain.read_text().strip()
            if store.authenticate(key) is None:  # the store was replaced: register it again
                add_key(keys_file, name=f"{name}-{secrets.token_hex(2)}", role=role, key=key,
                        development=True)
        else:
            key = generate_key()
            add_key(keys_file, name=name, role=role, key=key, development=True)
            plain.parent.mkdir(parents=True, exist_ok=True)
            plain.write_text(key + "\n")
            os.chmod(plain, 0o600)
        keys[role] = key
    return keys


def presented_key(headers: list[tuple[bytes, bytes]]) -> str | None:
    """The key of an ASGI request's raw headers: X-API-Key, else Authorization: Bearer."""
    bearer = None
    for name, value in headers:
        if name == _KEY_HEADER_LOWER:
            return value.decode("latin-1")
        if name == b"authorization" and value[:7].lower() == b"bearer ":
            bearer = value[7:].decode("latin-1").strip()
    return bearer


class ApiKeyMiddleware:
    """Pure ASGI: 401 without a valid key on /predict and /admin, 403 for a caller's key on
    /admin. The owner goes to `scope["state"]["api_key"]` for the rate limits and handlers.

    With `limits`, requests without a valid key (401s, and every route open without one) count
    against `limits.unauthenticated` per client address; an address over it gets 429 before
    its key is hashed, so a flood of bad keys costs one limit check each."""

    def __init__(self, app: Any, *, store: Any, limits: RateLimits | None = None) -> None:
        self.app = app
        self.store = store  # has .keys: KeyStore (replaced by /admin/keys/reload)
        self.limits = limits

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        admin = path.startswith("/admin")
        guarded = admin or path.startswith("/predict")
        limits = self.limits
        address = _address(scope) if limits is not None else ""
        if limits is not None:
            # An open route's request counts now; a guarded one is only asked about, before its
            # key is hashed, and counts if its key turns out wrong.
            refusal = limits.refuse_address(address) if guarded else limits.charge_address(address)
            if refusal is not None:
                await send_problem(send, refusal)
                return
        if not guarded:
            await self.app(scope, receive, send)
            return
        owner = self.store.keys.authenticate(presented_key(scope["headers"]))
        if owner is None:
            refusal = None if limits is None else limits.charge_address(address)
            if refusal is not None:
                await send_problem(send, refusal)
                return
            await send_problem(send, Unauthorized(
                f"missing or invalid API key: send it in the {KEY_HEADER} header",
                headers=_CHALLENGE))
            return
        if admin and owner.role != "admin":
            await send_problem(send, Forbidden("this endpoint needs an admin key"))
            return
        scope.setdefault("state", {})["api_key"] = owner
        await self.app(scope, receive, send)


def _address(scope: Any) -> str:
    """The client's address (uvicorn's, after any trusted proxy's X-Forwarded-For)."""
    client = scope.get("client")
    return str(client[0]) if client else "unknown"
