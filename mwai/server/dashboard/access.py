"""Who may see the dashboard and who may act: the access rules, sessions and CSRF.

- No token set (MWAI_UI_TOKEN and MWAI_UI_ADMIN_TOKEN empty): only loopback
  clients get in, and they may act. A request that came through a proxy
  (X-Forwarded-For / Forwarded) is not a loopback client, even from 127.0.0.1.
- A token set: the login page takes it and sets a signed session cookie
  (HttpOnly, SameSite=Strict, Secure behind https). The admin token may act; the
  UI token only looks, unless it is the only token set.
- MWAI_UI_TRUSTED_USER_HEADER: a reverse proxy on 127.0.0.1 that authenticated the
  user (oauth2-proxy...) names them in this header; they are in without a token
  (allowed to act when no admin token is set; else they log in with it).

The session is a small JSON document signed with HMAC-SHA256. Its key comes from
the tokens, so changing a token ends every session; without a token it is random
per process. Every POST carries a CSRF token bound to the session's nonce.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import secrets
import time
from dataclasses import dataclass
from http.cookies import SimpleCookie
from typing import Literal

import orjson
from aiohttp import web

from mwai.settings import Settings

Role = Literal["none", "viewer", "admin"]

COOKIE = "mwai_ui"
SESSION_MAX_AGE_S = 12 * 3600
USER_MAX_CHARS = 64
LOCAL_USER = "local operator"


@dataclass(frozen=True, slots=True)
class Session:
    user: str
    role: Role
    nonce: str  # binds the CSRF token to this session
    issued_at: float

    @property
    def can_act(self) -> bool:
        return self.role == "admin"

    @property
    def signed_in(self) -> bool:
        return self.role != "none"


def clean_user(raw: str) -> str:
    """A user name fit for an event row and a page: printable, bounded."""
    text = "".join(ch for ch in raw.strip() if ch.isprintable())
    return text[:USER_MAX_CHARS]


def is_loopback(address: str | None) -> bool:
    if not address:
        return False
    try:
        return ipaddress.ip_address(address.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


def _proxied(request: web.BaseRequest) -> bool:
    return "X-Forwarded-For" in request.headers or "Forwarded" in request.headers


class Access:
    """The access rules of one service, built from its settings."""

    def __init__(self, settings: Settings) -> None:
        self.ui_token = settings.ui_token
        self.admin_token = settings.ui_admin_token
        self.user_header = settings.ui_trusted_user_header.strip()
        if self.token_mode:
            material = b"mwai-ui-session\0" + self.ui_token.encode() + b"\0" + \
                self.admin_token.encode()
            self._key = hashlib.sha256(material).digest()
        else:
            self._key = secrets.token_bytes(32)

    @property
    def token_mode(self) -> bool:
        return bool(self.ui_token or self.admin_token)

    # ------------------------------------------------------------ tokens

    def role_of_token(self, token: str) -> Role:
        given = token.strip().encode()
        if not given:
            return "none"
        if self.admin_token and hmac.compare_digest(given, self.admin_token.encode()):
            return "admin"
        if self.ui_token and hmac.compare_digest(given, self.ui_token.encode()):
            return "viewer" if self.admin_token else "admin"
        return "none"

    # ------------------------------------------------------------ who is asking

    def peer_allowed(self, request: web.BaseRequest) -> bool:
        """Without a token only loopback clients that did not come through a proxy
        (or that the trusted proxy authenticated) may even see the login page."""
        if self.token_mode:
            return True
        return is_loopback(request.remote) and (not _proxied(request)
                                                or self.sso_user(request) is not None)

    def sso_user(self, request: web.BaseRequest) -> str | None:
        """The user a trusted reverse proxy on this host vouches for."""
        if not self.user_header or not is_loopback(request.remote):
            return None
        user = clean_user(request.headers.get(self.user_header, ""))
        return user or None

    def identify(self, request: web.BaseRequest) -> tuple[Session, bool]:
        """The request's session, and whether a new cookie must be set."""
        sso = self.sso_user(request)
        cookie = self.read_cookie(request.cookies.get(COOKIE, ""))
        if cookie is not None and (sso is None or cookie.user == sso):
            return cookie, False
        if sso is not None:
            role: Role = "viewer" if self.admin_token else "admin"
            return self.new_session(sso, role), True
        if not self.token_mode:
            return self.new_session(LOCAL_USER, "admin"), True
        return self.new_session("", "none"), True

    # ------------------------------------------------------------ the cookie

    def new_session(self, user: str, role: Role) -> Session:
        # Whole seconds: the cookie carries exactly this value.
        return Session(user=user, role=role, nonce=secrets.token_urlsafe(16),
                       issued_at=float(int(time.time())))

    def _sign(self, payload: bytes) -> str:
        return hmac.new(self._key, payload, hashlib.sha256).hexdigest()

    def cookie_value(self, session: Session) -> str:
        payload = orjson.dumps({"u": session.user, "r": session.role, "n": session.nonce,
                                "t": session.issued_at})
        encoded = base64.urlsafe_b64encode(payload).decode().rstrip("=")
        return f"{encoded}.{self._sign(payload)}"

    def read_cookie(self, value: str) -> Session | None:
        encoded, _, signature = value.partition(".")
        if not encoded or not signature:
            return None
        try:
            payload = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
        except ValueError:
            return None
        if not hmac.compare_digest(signature, self._sign(payload)):
            return None
        try:
            data = orjson.loads(payload)
            session = Session(user=str(data["u"]), role=data["r"], nonce=str(data["n"]),
                              issued_at=float(data["t"]))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            return None
        if session.role not in ("none", "viewer", "admin"):
            return None
        if not 0 <= time.time() - session.issued_at <= SESSION_MAX_AGE_S:
            return None
        return session

    def set_cookie(self, request: web.BaseRequest, response: web.StreamResponse,
                   session: Session) -> None:
        """Set the session cookie on a response not yet prepared."""
        response.set_cookie(COOKIE, self.cookie_value(session), path="/dashboard/",
                            max_age=SESSION_MAX_AGE_S, httponly=True, samesite="Strict",
                            secure=https(request))

    def cookie_header(self, request: web.BaseRequest, session: Session) -> str:
        """The Set-Cookie header value (for a response whose cookies are already read)."""
        jar: SimpleCookie = SimpleCookie()
        jar[COOKIE] = self.cookie_value(session)
        morsel = jar[COOKIE]
        morsel["path"] = "/dashboard/"
        morsel["max-age"] = str(SESSION_MAX_AGE_S)
        morsel["httponly"] = True
        morsel["samesite"] = "Strict"
        if https(request):
            morsel["secure"] = True
        return morsel.OutputString()

    # ------------------------------------------------------------ CSRF

    def csrf_token(self, session: Session) -> str:
        return self._sign(b"csrf\0" + session.nonce.encode())

    def csrf_ok(self, request: web.BaseRequest, session: Session, given: str) -> bool:
        origin = request.headers.get("Origin")
        if origin is not None and origin != "null":
            host = origin.split("://", 1)[-1]
            if host != request.host:
                return False
        return hmac.compare_digest(given.encode(), self.csrf_token(session).encode())


def https(request: web.BaseRequest) -> bool:
    """Reached over https: directly, or through a proxy on this host that says so."""
    if request.secure:
        return True
    return (is_loopback(request.remote)
            and request.headers.get("X-Forwarded-Proto", "").lower() == "https")
