"""A small, real OpenID Connect provider for browser tests: no network, no other process.

A FastAPI app served by uvicorn in a background thread on 127.0.0.1 (a port of its own). It does the
authorization-code flow that Streamlit's ``st.login()`` (Authlib's Starlette client) performs:
discovery, ``/authorize`` (a form with an "E-mail" field and a "Sign in" button; honours ``state``,
``nonce`` and PKCE ``S256``), ``/token`` (client_secret_basic or client_secret_post; checks the code,
its redirect_uri and the PKCE verifier; returns an access token and an RS256 ID token), ``/jwks`` and
``/userinfo``. Codes are single-use and short-lived. Any e-mail signs in: it is the user's identity.

    with OidcProvider() as idp:
        idp.metadata_url, idp.client_id, idp.client_secret   # for [auth] in secrets.toml

The ``[auth]`` section Streamlit needs: ``idp.secrets_toml(redirect_uri)``.
"""

from __future__ import annotations

import base64
import hashlib
import html
import secrets
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote_plus, urlencode, urlsplit, urlunsplit

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from joserfc import jwt
from joserfc.jwk import RSAKey

CODE_TTL_S = 120
TOKEN_TTL_S = 3600
STARTUP_TIMEOUT_S = 20


@dataclass
class _Grant:
    """What /authorize remembered for one code, for /token to check."""

    client_id: str
    redirect_uri: str
    email: str
    nonce: str | None
    scope: str
    code_challenge: str | None
    code_challenge_method: str | None
    expires: float


@dataclass
class SignIn:
    """One completed sign-in (a code exchanged for tokens), for tests to look at."""

    email: str
    sub: str
    nonce: str | None
    used_pkce: bool


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _sub_for(email: str) -> str:
    """A stable subject per e-mail (the same user gets the same ``sub`` every time)."""
    return "user-" + hashlib.sha256(email.lower().encode()).hexdigest()[:16]


def _name_for(email: str) -> str:
    local = email.split("@", 1)[0]
    return " ".join(part.capitalize() for part in local.replace("_", ".").split(".") if part) or email


def _with_query(url: str, params: dict[str, str]) -> str:
    parts = urlsplit(url)
    query = parts.query + ("&" if parts.query else "") + urlencode(params)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))


def _error(status: int, error: str, description: str) -> JSONResponse:
    return JSONResponse({"error": error, "error_description": description}, status_code=status)


_FORM = """<!doctype html>
<html><head><meta charset="utf-8"><title>Test sign-in</title></head>
<body>
<h1>Test OpenID provider</h1>
<p>Signing in to <b>{client_id}</b>.</p>
<form method="post" action="{action}">
{hidden}
<label for="email">E-mail</label>
<input id="email" name="email" type="email" required autofocus value="{login_hint}">
<button type="submit">Sign in</button>
</form>
</body></html>
"""


@dataclass
class OidcProvider:
    """A running test OIDC provider (use as a context manager; ``start()``/``stop()`` also work).

    ``redirect_uris``: the callbacks the client may use; ``None`` accepts any http(s) URL on
    127.0.0.1 or localhost (handy when the app's port is known only later).
    """

    client_id: str = "fxbatch-e2e"
    client_secret: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    redirect_uris: list[str] | None = None
    host: str = "127.0.0.1"
    sign_ins: list[SignIn] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._key = RSAKey.generate_key(2048, parameters={"kid": secrets.token_hex(8), "use": "sig", "alg": "RS256"})
        self._codes: dict[str, _Grant] = {}
        self._tokens: dict[str, dict[str, Any]] = {}  # access token -> userinfo claims
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    # ------------------------------------------------------------------ addresses
    @property
    def issuer(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def metadata_url(self) -> str:
        return f"{self.issuer}/.well-known/openid-configuration"

    def secrets_toml(self, redirect_uri: str, cookie_secret: str | None = None) -> str:
        """The ``[auth]`` section of a Streamlit secrets.toml that signs in through this provider.
        ``redirect_uri`` is the app's ``http://127.0.0.1:PORT/oauth2callback`` (``{port}`` allowed:
        Streamlit puts its server.port there)."""
        cookie_secret = cookie_secret or secrets.token_hex(32)
        return (
            "[auth]\n"
            f'redirect_uri = "{redirect_uri}"\n'
            f'cookie_secret = "{cookie_secret}"\n'
            f'client_id = "{self.client_id}"\n'
            f'client_secret = "{self.client_secret}"\n'
            f'server_metadata_url = "{self.metadata_url}"\n'
        )

    def metadata(self) -> dict[str, Any]:
        iss = self.issuer
        return {
            "issuer": iss,
            "authorization_endpoint": f"{iss}/authorize",
            "token_endpoint": f"{iss}/token",
            "jwks_uri": f"{iss}/jwks",
            "userinfo_endpoint": f"{iss}/userinfo",
            "response_types_supported": ["code"],
            "grant_types_supported": ["authorization_code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "scopes_supported": ["openid", "email", "profile"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
            "claims_supported": ["iss", "sub", "aud", "exp", "iat", "nonce", "email", "email_verified", "name"],
            "code_challenge_methods_supported": ["S256"],
        }

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> OidcProvider:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, 0))
        self.port = sock.getsockname()[1]
        self._sock = sock
        config = uvicorn.Config(self._app(), log_level="warning", lifespan="off", access_log=False)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, name="oidc-provider", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("the test OIDC provider did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self._sock is not None:
            self._sock.close()
        self._server = self._thread = self._sock = None

    def __enter__(self) -> OidcProvider:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ the flow
    def _redirect_allowed(self, redirect_uri: str) -> bool:
        if self.redirect_uris is not None:
            return redirect_uri in self.redirect_uris
        parts = urlsplit(redirect_uri)
        return parts.scheme in ("http", "https") and parts.hostname in ("127.0.0.1", "localhost", "::1")

    def _check_authorize(self, params: dict[str, str]) -> Response | None:
        """None when the request may go on; else the error response (to the client when its
        redirect_uri is trusted, else shown here, as OIDC requires)."""
        redirect_uri = params.get("redirect_uri", "")
        if params.get("client_id") != self.client_id:
            return HTMLResponse("unknown client_id", status_code=400)
        if not self._redirect_allowed(redirect_uri):
            return HTMLResponse("redirect_uri not allowed", status_code=400)

        def back(error: str, description: str) -> RedirectResponse:
            out = {"error": error, "error_description": description}
            if "state" in params:
                out["state"] = params["state"]
            return RedirectResponse(_with_query(redirect_uri, out), status_code=302)

        if params.get("response_type") != "code":
            return back("unsupported_response_type", "only response_type=code")
        if "openid" not in params.get("scope", "").split():
            return back("invalid_scope", "the openid scope is required")
        method = params.get("code_challenge_method")
        if params.get("code_challenge") and method not in (None, "", "S256"):
            return back("invalid_request", "only code_challenge_method=S256")
        return None

    def _issue_tokens(self, grant: _Grant) -> dict[str, Any]:
        now = int(time.time())
        sub = _sub_for(grant.email)
        user = {"sub": sub, "email": grant.email, "email_verified": True, "name": _name_for(grant.email)}
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "aud": grant.client_id,
            "iat": now,
            "exp": now + TOKEN_TTL_S,
            "auth_time": now,
            **user,
        }
        if grant.nonce is not None:
            claims["nonce"] = grant.nonce
        access_token = secrets.token_urlsafe(32)
        digest = hashlib.sha256(access_token.encode("ascii")).digest()
        claims["at_hash"] = _b64url(digest[: len(digest) // 2])
        id_token = jwt.encode({"alg": "RS256", "kid": self._key.kid, "typ": "JWT"}, claims, self._key)
        with self._lock:
            self._tokens[access_token] = user
            self.sign_ins.append(
                SignIn(email=grant.email, sub=sub, nonce=grant.nonce, used_pkce=grant.code_challenge is not None)
            )
        return {
            "access_token": access_token,
            "token_type": "Bearer",
            "expires_in": TOKEN_TTL_S,
            "id_token": id_token,
            "scope": grant.scope,
        }

    def _client_credentials(self, request: Request, form: dict[str, str]) -> tuple[str | None, str | None]:
        header = request.headers.get("authorization", "")
        if header.lower().startswith("basic "):
            try:
                raw = base64.b64decode(header[6:].strip()).decode("utf-8")
            except (ValueError, UnicodeDecodeError):
                return None, None
            cid, _, secret = raw.partition(":")
            return unquote_plus(cid), unquote_plus(secret)
        return form.get("client_id"), form.get("client_secret")

    def _app(self) -> FastAPI:
        app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)

        async def form_of(request: Request) -> dict[str, str]:
            body = (await request.body()).decode("utf-8")
            return {k: v[0] for k, v in parse_qs(body, keep_blank_values=True).items()}

        @app.get("/.well-known/openid-configuration")
        async def discovery() -> JSONResponse:
            return JSONResponse(self.metadata())

        @app.get("/jwks")
        async def jwks() -> JSONResponse:
            return JSONResponse({"keys": [self._key.as_dict(private=False)]})

        @app.get("/authorize")
        async def authorize_form(request: Request) -> Response:
            params = dict(request.query_params)
            refused = self._check_authorize(params)
            if refused is not None:
                return refused
            keep = ("client_id", "redirect_uri", "response_type", "scope", "state", "nonce", "code_challenge",
                    "code_challenge_method")  # fmt: skip
            hidden = "\n".join(
                f'<input type="hidden" name="{k}" value="{html.escape(params[k], quote=True)}">'
                for k in keep
                if k in params
            )
            page = _FORM.format(
                client_id=html.escape(self.client_id),
                action="/authorize",
                hidden=hidden,
                login_hint=html.escape(params.get("login_hint", ""), quote=True),
            )
            return HTMLResponse(page, headers={"Cache-Control": "no-store"})

        @app.post("/authorize")
        async def authorize_submit(request: Request) -> Response:
            params = await form_of(request)
            refused = self._check_authorize(params)
            if refused is not None:
                return refused
            email = params.get("email", "").strip()
            if "@" not in email:
                return HTMLResponse("an e-mail address is required", status_code=400)
            code = secrets.token_urlsafe(24)
            grant = _Grant(
                client_id=params["client_id"],
                redirect_uri=params["redirect_uri"],
                email=email,
                nonce=params.get("nonce") or None,
                scope=params.get("scope", "openid"),
                code_challenge=params.get("code_challenge") or None,
                code_challenge_method=params.get("code_challenge_method") or None,
                expires=time.monotonic() + CODE_TTL_S,
            )
            with self._lock:
                self._codes[code] = grant
            out = {"code": code}
            if "state" in params:
                out["state"] = params["state"]
            return RedirectResponse(_with_query(grant.redirect_uri, out), status_code=302)

        @app.post("/token")
        async def token(request: Request) -> JSONResponse:
            form = await form_of(request)
            cid, secret = self._client_credentials(request, form)
            if cid != self.client_id or secret is None or not secrets.compare_digest(secret, self.client_secret):
                return _error(401, "invalid_client", "client authentication failed")
            if form.get("grant_type") != "authorization_code":
                return _error(400, "unsupported_grant_type", "only authorization_code")
            with self._lock:
                grant = self._codes.pop(form.get("code", ""), None)  # single use
            if grant is None or grant.expires < time.monotonic():
                return _error(400, "invalid_grant", "unknown, used or expired code")
            if grant.client_id != cid:
                return _error(400, "invalid_grant", "code issued to another client")
            if form.get("redirect_uri") != grant.redirect_uri:
                return _error(400, "invalid_grant", "redirect_uri does not match the authorization request")
            if grant.code_challenge is not None:
                verifier = form.get("code_verifier", "")
                if not verifier:
                    return _error(400, "invalid_grant", "code_verifier required (PKCE)")
                expected = _b64url(hashlib.sha256(verifier.encode("ascii")).digest())
                if not secrets.compare_digest(expected, grant.code_challenge):
                    return _error(400, "invalid_grant", "PKCE verification failed")
            return JSONResponse(self._issue_tokens(grant), headers={"Cache-Control": "no-store", "Pragma": "no-cache"})

        @app.api_route("/userinfo", methods=["GET", "POST"])
        async def userinfo(request: Request) -> JSONResponse:
            header = request.headers.get("authorization", "")
            token = header[7:].strip() if header.lower().startswith("bearer ") else ""
            with self._lock:
                user = self._tokens.get(token)
            if user is None:
                return JSONResponse(
                    {"error": "invalid_token"},
                    status_code=401,
                    headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
                )
            return JSONResponse(user)

        return app
