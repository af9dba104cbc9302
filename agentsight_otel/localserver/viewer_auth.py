"""Who may read the transcript viewer (`/`, `/conversations/…`, `/viewer/…`).

- Bound to a loopback address (127.0.0.0/8, ::1, `localhost`): no key. Only requests whose `Host` header names
  a loopback address or `localhost` are answered, so a web page elsewhere cannot read the viewer through DNS
  rebinding (its requests carry its own host name).
- Bound to any other address (e.g. 0.0.0.0), or with `LocalServer(viewer_requires_key=True)`: a key the server
  accepts (write or read role) is required, either as the usual `Authorization: Api-Key …` header, or once through
  the login form (`POST /login/`, the key in the form body), which sets an HttpOnly, SameSite=Strict session
  cookie holding a random token, never the key. Sessions live in memory for `SESSION_SECONDS` and end with
  `POST /logout/` or a server restart.

The key never appears in a URL, a page or a log line: it travels only in a header or a POST body.
"""

from __future__ import annotations

import ipaddress
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

from .keys import is_well_formed, normalise_key

COOKIE_NAME = "agentsight_viewer"
SESSION_SECONDS = 12 * 3600
MAX_SESSIONS = 1000
VIEWER_ROLE = "viewer"


def is_loopback_host(host: str) -> bool:
    """Tell whether a bind address or host name is loopback-only (127.0.0.0/8, ::1, localhost)."""
    name = host.strip().strip("[]").lower().rstrip(".")
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def host_name(header: str) -> str:
    """The host part of a `Host` header value: `[::1]:8787` -> `::1`, `localhost:80` -> `localhost`."""
    value = header.strip()
    if value.startswith("["):
        return value[1 : value.find("]")] if "]" in value else value[1:]
    if value.count(":") == 1:
        return value.split(":", 1)[0]
    return value


def parse_cookies(header: str | None) -> dict[str, str]:
    """A lenient `Cookie` header parser (SimpleCookie gives up on a whole header for one odd cookie)."""
    cookies: dict[str, str] = {}
    for part in (header or "").split(";"):
        name, sep, value = part.strip().partition("=")
        if sep and name and name not in cookies:
            cookies[name] = value.strip().strip('"')
    return cookies


class ViewerAccess:
    """The viewer's access rule for one server: open on loopback, key or session cookie elsewhere."""

    def __init__(self, bind_host: str, roles: Mapping[str, str], *, require_key: bool = False) -> None:
        self.open = not require_key and is_loopback_host(bind_host or "0.0.0.0")
        self._roles = roles
        self._sessions: OrderedDict[str, float] = OrderedDict()
        self._lock = threading.Lock()
        self.summaries: dict[int, tuple[Any, Any]] = {}  # the list page's per-conversation cache (viewer.py)
        self.summaries_lock = threading.Lock()

    # -- requests ----------------------------------------------------------------------------------------

    # `headers` below: the request headers with lower-case names.

    def host_allowed(self, headers: Mapping[str, Any]) -> bool:
        """On a keyless (loopback) viewer, only loopback host names are answered (DNS rebinding guard)."""
        if not self.open:
            return True
        host = headers.get("host")
        return not host or is_loopback_host(host_name(str(host)))

    def key_role(self, key: str) -> str | None:
        """The role of a key the server accepts, or None."""
        key = key.strip()
        return self._roles.get(normalise_key(key)) if is_well_formed(key) else None

    def role_for(self, headers: Mapping[str, Any]) -> str:
        """`viewer` when the request may read the viewer, "" when it must log in first."""
        if self.open:
            return VIEWER_ROLE
        parts = str(headers.get("authorization") or "").split()
        if len(parts) == 2 and parts[0].lower() == "api-key" and self.key_role(parts[1]) is not None:
            return VIEWER_ROLE
        token = parse_cookies(headers.get("cookie")).get(COOKIE_NAME)
        return VIEWER_ROLE if token and self.session_valid(token) else ""

    # -- sessions ----------------------------------------------------------------------------------------

    def new_session(self) -> str:
        """Start a session and return its random token (the cookie value)."""
        token = secrets.token_urlsafe(32)
        now = time.monotonic()
        with self._lock:
            self._sessions[token] = now + SESSION_SECONDS
            while len(self._sessions) > MAX_SESSIONS:
                self._sessions.popitem(last=False)
        return token

    def session_valid(self, token: str) -> bool:
        """Tell whether a session token is known and unexpired (expired ones are forgotten)."""
        with self._lock:
            expires = self._sessions.get(token)
            if expires is None:
                return False
            if expires < time.monotonic():
                del self._sessions[token]
                return False
            return True

    def end_session(self, token: str | None) -> None:
        """Forget a session token (logout)."""
        if token:
            with self._lock:
                self._sessions.pop(token, None)
