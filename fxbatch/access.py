"""Who may do what: roles per e-mail address, personal API tokens, and who is acting now.

Without login (no ``[auth]`` section: the server serves 127.0.0.1 only, or the CLI and notebooks
open the database file) there is one person, the OS user, who may do everything. With login,
every action runs as a ``Principal``: a signed-in page user or an API token's owner, set per page
run or per request with ``acting()``/``act_as()``, and ``Access.require`` refuses what the
principal's role does not allow, naming the role needed (the API answers 403 with that message).

Roles are ordered, each including the ones before it: viewer (read) < analyst (load, correct,
simulated runs, what-if, exports, unmask, request real runs) < approver (approve real runs, settle bookings in doubt) <
admin (roles, everyone's tokens, the audit trail). Roles live in the ``users`` table; the first
admin comes from the ``admin_email`` setting.

A personal API token is ``fxb_<id>_<secret>``: the id finds the row, the secret is stored only as
its SHA-256 (a random 256-bit secret needs no slow hash), compared in constant time; it has an
expiry and can be revoked. The token is shown once, when it is made.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import hmac
import re
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING

import duckdb
import pandas as pd

from fxbatch import audit
from fxbatch.errors import ConflictError, ForbiddenError, NotFoundError, NotSignedInError, SettingsError

if TYPE_CHECKING:
    from fxbatch.store import Store

SCHEMA = """
CREATE TABLE users (
    email VARCHAR PRIMARY KEY,
    role VARCHAR NOT NULL,
    granted_by VARCHAR NOT NULL,
    granted_at TIMESTAMP NOT NULL
);
CREATE TABLE api_tokens (
    token_id VARCHAR PRIMARY KEY,
    email VARCHAR NOT NULL,
    name VARCHAR NOT NULL,
    secret_sha256 VARCHAR NOT NULL,
    created_at TIMESTAMP NOT NULL,
    expires_at TIMESTAMP NOT NULL,
    revoked_at TIMESTAMP,
    revoked_by VARCHAR,
    last_used_at TIMESTAMP
);
"""
TOKEN_PREFIX = "fxb_"
_TOKEN = re.compile(r"fxb_([0-9a-f]{12})_([A-Za-z0-9_-]{43})")
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
_LAST_USED_EVERY = timedelta(minutes=1)  # a token's last use is written at most this often


class Role(StrEnum):
    VIEWER = "viewer"
    ANALYST = "analyst"
    APPROVER = "approver"
    ADMIN = "admin"

    @property
    def rank(self) -> int:
        return list(Role).index(self)

    def allows(self, needed: Role) -> bool:
        return self.rank >= needed.rank


ROLE_DOES = {
    Role.VIEWER: "reads batches, runs and reports",
    Role.ANALYST: "also loads and corrects batches, runs the simulated bank and what-if, exports, unmasks "
    "accounts and requests real-money runs",
    Role.APPROVER: "also approves or rejects other people's real-money runs and settles bookings in doubt by hand",
    Role.ADMIN: "also manages roles and everyone's API tokens, and reads the audit trail",
}


@dataclass(frozen=True)
class Principal:
    """Who is acting: an e-mail address (signed in, or an API token's owner) or the OS user."""

    name: str
    role: Role | None
    via: str  # "local" (no login), "sign-in", "token", or "system" (fxbatch itself: the sample batch on first start)

    def describe(self) -> str:
        role = self.role.value if self.role else "no role"
        return f"{self.name} ({role})"


_principal: contextvars.ContextVar[Principal | None] = contextvars.ContextVar("fxbatch_principal", default=None)


def normal_email(email: str) -> str:
    """An e-mail address as roles are keyed: trimmed and lower-case; SettingsError if it is not one."""
    text = str(email).strip().lower()
    if not _EMAIL.fullmatch(text):
        raise SettingsError(f"{email!r} is not an e-mail address.")
    return text


def act_as(principal: Principal | None) -> None:
    """Make ``principal`` the actor of this context from now on (a page run, an API request's task);
    the audit trail records it. ``None`` clears it."""
    _principal.set(principal)
    audit.set_actor(principal.name if principal else None)


@contextmanager
def acting(principal: Principal) -> Iterator[Principal]:
    """Act as ``principal`` inside the block (tests, scripts): restored after."""
    token = _principal.set(principal)
    with audit.acting_as(principal.name):
        try:
            yield principal
        finally:
            _principal.reset(token)


def current() -> Principal | None:
    return _principal.get()


@dataclass(frozen=True)
class NewToken:
    """A token just made: ``token`` is shown this once and never again."""

    token_id: str
    token: str
    name: str
    email: str
    expires_at: datetime


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def _sha256(secret: str) -> str:
    return hashlib.sha256(secret.encode("ascii")).hexdigest()


class Access:
    """Roles and tokens on one database, and the rule ``require`` applies; ``login`` off = one local user."""

    def __init__(self, store: Store, *, login: bool = False, first_admin: str | None = None,
                 token_days: int = 90) -> None:  # fmt: skip
        self.store = store
        self.login = login
        self.first_admin = normal_email(first_admin) if first_admin else None
        self.token_days = token_days
        if login:
            if self.first_admin is None:
                raise SettingsError(
                    "Setting FXBATCH_ADMIN_EMAIL is required with login: the e-mail address of the first admin."
                )
            self._ensure_first_admin(self.first_admin)

    @property
    def four_eyes(self) -> bool:
        """Whether real money needs a second person: with login, and on a team's database opened
        without it (one with roles, i.e. one a server with login has kept: the CLI or a notebook
        on its file while the server is stopped keeps its rules, it does not drop them)."""
        return self.login or self.team_database()

    def team_database(self) -> bool:
        """Whether the database keeps roles (a server with login has served it)."""
        return bool(self.store.cursor().execute("SELECT EXISTS (SELECT 1 FROM users)").fetchall()[0][0])

    # -- who is acting ---------------------------------------------------------
    def principal(self) -> Principal:
        """The acting principal; without login the OS user (admin); with login NotSignedInError if none."""
        who = current()
        if not self.login:
            return who if who is not None and who.via == "local" else Principal(audit.os_user(), Role.ADMIN, "local")
        if who is None or who.via == "local":
            raise NotSignedInError(
                "This fxbatch server has login: sign in on its pages, or send a personal API token "
                "(FXBATCH_TOKEN, made on the Tokens page) as 'Authorization: Bearer <token>'."
            )
        return who

    def require(self, needed: Role, doing: str) -> Principal:
        """The acting principal if its role allows ``needed``; ForbiddenError naming the role otherwise."""
        who = self.principal()
        if who.role is not None and who.role.allows(needed):
            return who
        have = f"your role is {who.role.value}" if who.role else "you have no role yet"
        raise ForbiddenError(
            f"To {doing} you need the {needed.value} role; {have} ({who.name}). Ask an admin"
            f"{' (' + self.first_admin + ')' if self.first_admin else ''} to grant it."
        )

    def may(self, needed: Role) -> bool:
        """Whether the acting principal may do what needs ``needed`` (pages hide what it may not)."""
        try:
            self.require(needed, "do this")
        except (ForbiddenError, NotSignedInError):
            return False
        return True

    def signed_in(self, email: str, verified: object = None) -> Principal:
        """The principal of a user the sign-in provider vouched for, with the role the database gives.

        ``verified``: the provider's ``email_verified`` claim; an address it does not say is verified
        (true) gets no role (someone could have typed another person's address at the provider). A
        provider that sends no such claim (None: Entra ID) is taken at its word."""
        address = normal_email(email)
        if verified is not None and verified is not True and str(verified).strip().lower() != "true":
            raise NotSignedInError(
                f"Your sign-in provider has not verified the e-mail address {address}: verify it there, then sign "
                "in again. fxbatch gives roles to verified addresses only."
            )
        return Principal(address, self.role_of(address), "sign-in")

    def record_sign_in(self, principal: Principal) -> None:
        audit.record(self.store, principal.name, "sign-in", f"user:{principal.name}",
                     {"role": principal.role.value if principal.role else None})  # fmt: skip

    # -- roles -----------------------------------------------------------------
    def role_of(self, email: str) -> Role | None:
        rows = self.store.cursor().execute("SELECT role FROM users WHERE email = ?", [email.strip().lower()]).fetchall()
        return Role(rows[0][0]) if rows else None

    def users(self) -> pd.DataFrame:
        """Every user with a role (email, role, granted_by, granted_at), by e-mail."""
        self.require(Role.ADMIN, "see who has which role")
        return self.store.cursor().execute("SELECT email, role, granted_by, granted_at FROM users ORDER BY email").df()

    def admins(self) -> list[str]:
        """Whom to ask for a role (the admins' e-mail addresses)."""
        rows = self.store.cursor().execute("SELECT email FROM users WHERE role = 'admin' ORDER BY email").fetchall()
        return [r[0] for r in rows]

    def set_role(self, email: str, role: Role | str | None) -> None:
        """Give ``email`` a role, or take its role away (None); admin only; the last admin stays.
        Taking the role away revokes the user's API tokens (given a role again later, an old token,
        a leaked one included, would work again)."""
        who = self.require(Role.ADMIN, "change roles")
        address = normal_email(email)
        new = Role(role) if role else None
        action = "role.grant" if new else "role.revoke"
        with audit.audited(self.store, who.name, action, f"user:{address}", role=new.value if new else None) as extra:
            cur = self.store.cursor()
            old = self.role_of(address)
            extra["was"] = old.value if old else None
            if old == Role.ADMIN and new != Role.ADMIN and self.admins() == [address]:
                raise ConflictError(f"{address} is the only admin: make someone else admin first.")
            if new is None:
                cur.execute("DELETE FROM users WHERE email = ?", [address])
                revoked = cur.execute(
                    "UPDATE api_tokens SET revoked_at = ?, revoked_by = ? WHERE email = ? AND revoked_at IS NULL "
                    "RETURNING token_id",
                    [_now(), who.name, address],
                ).fetchall()
                if revoked:
                    extra["revoked"] = sorted(r[0] for r in revoked)  # the API tokens (ids)
            else:
                cur.execute("INSERT OR REPLACE INTO users VALUES (?, ?, ?, ?)", [address, new.value, who.name, _now()])

    def _ensure_first_admin(self, email: str) -> None:
        """The setting's address is made admin while the database has no admin (a new database, or
        one whose admins all left); once admins manage roles, they may take that role away for good."""
        if self.admins():
            return
        self.store.cursor().execute(
            "INSERT OR REPLACE INTO users VALUES (?, 'admin', 'setting FXBATCH_ADMIN_EMAIL', ?)", [email, _now()]
        )
        audit.record(self.store, "setting FXBATCH_ADMIN_EMAIL", "role.grant", f"user:{email}", {"role": "admin"})

    # -- personal API tokens -----------------------------------------------------
    def create_token(self, name: str, days: int | None = None) -> NewToken:
        """A new token for the acting user, valid ``days`` (at most the token_days setting)."""
        who = self.require(Role.VIEWER, "make an API token")
        label = str(name).strip()
        if not label or len(label) > 100:
            raise SettingsError("A token needs a name of 1 to 100 characters (what it is for: 'laptop notebook').")
        life = self.token_days if days is None else int(days)
        if not 1 <= life <= self.token_days:
            raise SettingsError(f"A token lives 1 to {self.token_days} days (setting FXBATCH_TOKEN_DAYS); got {days}.")
        token_id, secret = secrets.token_hex(6), secrets.token_urlsafe(32)
        expires = _now() + timedelta(days=life)
        with audit.audited(self.store, who.name, "token.create", f"token:{token_id}", name=label, days=life):
            self.store.cursor().execute(
                "INSERT INTO api_tokens VALUES (?, ?, ?, ?, ?, ?, NULL, NULL, NULL)",
                [token_id, who.name, label, _sha256(secret), _now(), expires],
            )
        return NewToken(token_id, f"{TOKEN_PREFIX}{token_id}_{secret}", label, who.name, expires)

    def tokens(self, *, everyone: bool = False) -> pd.DataFrame:
        """The acting user's tokens (an admin's ``everyone``: all), newest first; never a secret."""
        who = self.require(
            Role.ADMIN if everyone else Role.VIEWER, "see everyone's tokens" if everyone else "see your tokens"
        )
        sql = ("SELECT token_id, email, name, created_at, expires_at, revoked_at, revoked_by, last_used_at, "
               "CASE WHEN revoked_at IS NOT NULL THEN 'revoked' WHEN expires_at <= ? THEN 'expired' "
               "ELSE 'active' END AS status FROM api_tokens")  # fmt: skip
        args: list[object] = [_now()]
        if not everyone:
            sql += " WHERE email = ?"
            args.append(who.name)
        return self.store.cursor().execute(sql + " ORDER BY created_at DESC", args).df()

    def revoke_token(self, token_id: str) -> None:
        """Revoke a token: its owner may, and an admin may revoke anyone's."""
        who = self.require(Role.VIEWER, "revoke a token")
        with audit.audited(self.store, who.name, "token.revoke", f"token:{token_id}") as extra:
            rows = (
                self.store.cursor()
                .execute("SELECT email, revoked_at FROM api_tokens WHERE token_id = ?", [str(token_id)])
                .fetchall()
            )
            if not rows or (rows[0][0] != who.name and not (who.role and who.role.allows(Role.ADMIN))):
                raise NotFoundError(f"You have no token {token_id}.")
            extra["owner"] = rows[0][0]
            if rows[0][1] is None:
                self.store.cursor().execute(
                    "UPDATE api_tokens SET revoked_at = ?, revoked_by = ? WHERE token_id = ?",
                    [_now(), who.name, str(token_id)],
                )

    def authenticate(self, token: str) -> Principal:
        """The principal a bearer token stands for; NotSignedInError (401) if it is unknown, revoked or expired."""
        match = _TOKEN.fullmatch(token.strip())
        if match is None:
            raise NotSignedInError("The API token is not an fxbatch token (fxb_...): make one on the Tokens page.")
        token_id, secret = match.groups()
        cur = self.store.cursor()
        # One query per request: the token and its owner's role together.
        rows = cur.execute(
            "SELECT t.email, t.secret_sha256, t.expires_at, t.revoked_at, t.last_used_at, u.role "
            "FROM api_tokens t LEFT JOIN users u ON u.email = t.email WHERE t.token_id = ?",
            [token_id],
        ).fetchall()
        if not rows or not hmac.compare_digest(rows[0][1], _sha256(secret)):
            raise NotSignedInError("The API token is not known to this server: make one on the Tokens page.")
        email, _digest, expires_at, revoked_at, last_used, role = rows[0]
        now = _now()
        if revoked_at is not None:
            raise NotSignedInError(f"The API token {token_id} was revoked: make a new one on the Tokens page.")
        if expires_at <= now:
            raise NotSignedInError(
                f"The API token {token_id} expired on {expires_at:%Y-%m-%d %H:%M} UTC: make a new one on the Tokens page."
            )
        if last_used is None or now - last_used >= _LAST_USED_EVERY:
            # Best effort: parallel requests with one token race to write it, and one write is enough.
            with contextlib.suppress(duckdb.Error):
                cur.execute("UPDATE api_tokens SET last_used_at = ? WHERE token_id = ?", [now, token_id])
        return Principal(email, Role(role) if role else None, "token")
