"""Bearer-token authentication: tokens are configured as SHA-256 hashes, never in clear.

A token may be limited to a set of accounts; handlers read the caller's scope from the
request (``request[SCOPE_KEY]``) and never show data of other accounts.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

from aiohttp import web
from aiohttp.typedefs import Middleware

from cloudinv.api.problems import problem
from cloudinv.core.settings import ApiToken


@dataclass(frozen=True)
class TokenScope:
    """What a caller may see: ``accounts`` None means every account."""

    name: str | None
    accounts: frozenset[str] | None

    def allows(self, account_id: str) -> bool:
        return self.accounts is None or account_id in self.accounts


SCOPE_KEY = web.RequestKey("scope", TokenScope)
OPEN_PATHS = frozenset({"/healthz", "/readyz", "/openapi.json", "/asyncapi.json", "/docs"})


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def generate_token() -> tuple[str, str]:
    """A new random token and its SHA-256 (what goes in the configuration)."""
    token = "ci_" + secrets.token_urlsafe(24)
    return token, hash_token(token)


class TokenTable:
    def __init__(self, tokens: Iterable[ApiToken]) -> None:
        self._by_hash = {
            t.sha256.get_secret_value(): TokenScope(
                name=t.name, accounts=frozenset(t.accounts) if t.accounts is not None else None
            )
            for t in tokens
        }

    def lookup(self, token: str) -> TokenScope | None:
        digest = hash_token(token)
        for known, scope in self._by_hash.items():
            if hmac.compare_digest(known, digest):
                return scope
        return None


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def auth_middleware(table: TokenTable) -> Middleware:
    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path in OPEN_PATHS:
            return await handler(request)
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        scope = table.lookup(token.strip()) if scheme.lower() == "bearer" and token else None
        if scope is None:
            return problem(
                401,
                "Unauthorized",
                "send Authorization: Bearer <token>; the demo prints a token at start "
                "and writes it to <data dir>/demo.json",
                headers={"WWW-Authenticate": 'Bearer realm="cloudinv"'},
            )
        request[SCOPE_KEY] = scope
        return await handler(request)

    return middleware
