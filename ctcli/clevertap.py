"""The HTTP client for CleverTap's REST API: requests, answers, retries, concurrency.

Nothing here logs or formats request headers or bodies: the passcode travels in the
`X-CleverTap-Passcode` header and httpx does not mask it, so every error raised from this module
is built from our own words, the URL and the HTTP status, and is raised `from None` so the httpx
exception (which holds the request) is not chained into tracebacks.
"""

from __future__ import annotations

import httpx
import orjson

from ctcli import __version__
from ctcli.errors import ConfigError, CredentialsRejected, Unreachable

UPLOAD_PATH = "/1/upload"
DELETE_PATH = "/1/delete/profiles.json"
MAX_UPLOAD_RECORDS = 1000
MAX_DELETE_IDENTITIES = 100
USER_AGENT = f"ctcli/{__version__}"

# Bodies CleverTap may echo are not ours to trust with unbounded size in a one-line message.
_MAX_REASON_CHARS = 300


def check_credentials(
    base_url: str,
    project_id: str,
    passcode: str,
    *,
    timeout: float = 10.0,
    transport: httpx.BaseTransport | None = None,
) -> None:
    """Ask CleverTap once whether it accepts these credentials.

    Returns when it does (any 2xx, or a 4xx other than 401/403: those mean the credentials got
    past authentication and only the empty upload was refused). Raises CredentialsRejected on
    401/403 and Unreachable on a network error, a timeout, a redirect or a 5xx.
    """
    base = _normalise_base_url(base_url)
    headers = _request_headers(project_id, passcode)
    try:
        with httpx.Client(
            transport=transport,
            timeout=httpx.Timeout(timeout),
            follow_redirects=False,
            http1=True,
            http2=False,
        ) as http:
            response = http.post(
                base + UPLOAD_PATH, content=orjson.dumps({"d": []}), headers=headers
            )
    except httpx.TransportError as exc:
        reason = _scrub(_transport_reason(exc, timeout), passcode)
        raise Unreachable(f"cannot reach {base}: {reason}") from None
    status = response.status_code
    if status in (401, 403):
        raise CredentialsRejected(_rejection_message(project_id, response, passcode))
    if 200 <= status < 300 or 400 <= status < 500:
        return
    raise Unreachable(f"cannot ask {base}: it answered {_status_text(status)}")


def _normalise_base_url(base_url: str) -> str:
    base = base_url.strip().rstrip("/")
    if not base.startswith(("http://", "https://")):
        raise ConfigError(f"the CleverTap endpoint {base_url!r} is not an http(s) URL")
    return base


def _request_headers(project_id: str, passcode: str) -> dict[str, str]:
    # A non-ASCII or control character would make httpx fail deep inside with the header
    # value at hand; refuse early, with a message that does not quote the passcode.
    for name, value in (("project id", project_id), ("passcode", passcode)):
        if not value or not value.isascii() or not value.isprintable():
            raise ConfigError(
                f"the CleverTap {name} is empty or holds characters an HTTP header cannot carry"
            )
    return {
        "X-CleverTap-Account-Id": project_id,
        "X-CleverTap-Passcode": passcode,
        "Content-Type": "application/json",
        "Accept": "application/json",
        "User-Agent": USER_AGENT,
    }


def _status_text(status: int) -> str:
    phrase = httpx.codes.get_reason_phrase(status)
    return f"HTTP {status} {phrase}" if phrase else f"HTTP {status}"


def _answer_error_text(content: bytes) -> str | None:
    """CleverTap's "error" text from a JSON answer body, if it has one."""
    try:
        payload = orjson.loads(content)
    except orjson.JSONDecodeError:
        return None
    if isinstance(payload, dict):
        error = payload.get("error")
        if isinstance(error, str) and error.strip():
            return error.strip()[:_MAX_REASON_CHARS]
    return None


def _rejection_message(project_id: str, response: httpx.Response, passcode: str) -> str:
    status = response.status_code
    detail = _answer_error_text(response.content) or httpx.codes.get_reason_phrase(status)
    detail = _scrub(detail, passcode)
    suffix = f"HTTP {status}: {detail}" if detail else f"HTTP {status}"
    return f"CleverTap refused the credentials for project {project_id} ({suffix})"


def _transport_reason(exc: httpx.TransportError, timeout: float) -> str:
    """Say in a few words why a request got no answer (never quoting the request itself)."""
    if isinstance(exc, httpx.ConnectTimeout):
        return f"no connection within {timeout:g} s"
    if isinstance(exc, httpx.ReadTimeout):
        return f"no answer within {timeout:g} s"
    if isinstance(exc, httpx.WriteTimeout):
        return f"could not send the request within {timeout:g} s"
    if isinstance(exc, httpx.PoolTimeout):
        return f"no free connection within {timeout:g} s"
    if isinstance(exc, httpx.TimeoutException):
        return "timed out"
    if isinstance(exc, httpx.RemoteProtocolError):
        return "the server dropped the connection"
    detail = str(exc).lower()
    if isinstance(exc, httpx.ConnectError):
        if "refused" in detail:
            return "connection refused"
        if any(
            hint in detail
            for hint in ("name or service not known", "nodename", "getaddrinfo", "name resolution")
        ):
            return "host name not found"
        if "unreachable" in detail:
            return "network unreachable"
        if "certificate" in detail or "ssl" in detail:
            return f"TLS handshake failed ({str(exc)[:_MAX_REASON_CHARS]})"
        return f"connection failed ({str(exc)[:_MAX_REASON_CHARS] or type(exc).__name__})"
    if isinstance(exc, httpx.NetworkError):
        return f"connection broken ({str(exc)[:_MAX_REASON_CHARS] or type(exc).__name__})"
    return f"{type(exc).__name__}: {str(exc)[:_MAX_REASON_CHARS]}"


def _scrub(text: str, passcode: str) -> str:
    # Belt and braces: a message built from server or OS text must never echo the passcode.
    return text.replace(passcode, "***") if passcode else text
