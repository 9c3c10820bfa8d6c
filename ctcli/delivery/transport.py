"""The HTTP transport under the client: the proxy for the endpoint, and one deadline per request.

httpx's timeouts bound each network operation, not a request: a server that answers one byte a
second resets the read timeout with every byte and holds a request open for as long as it
likes. Here every socket operation of a request gets at most the time left until that request's
deadline, so `--timeout` bounds a whole request, from connecting to its last byte.

The proxy is taken from the environment (HTTPS_PROXY, HTTP_PROXY, ALL_PROXY and NO_PROXY, as
curl reads them) and checked before anything is sent, so a bad value is a one-line error.
"""

from __future__ import annotations

import contextlib
import ipaddress
import math
import re
import threading
import time
import typing
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping

import httpcore
import httpx

from ctcli.config import redact_url
from ctcli.errors import ConfigError

_local = threading.local()
_PROXY_SCHEMES = ("http", "https")
_HOST_NAME = re.compile(r"[A-Za-z0-9_]([A-Za-z0-9_.-]*[A-Za-z0-9_])?\.?")


@contextlib.contextmanager
def request_deadline(seconds: float) -> Iterator[None]:
    """Every socket operation on this thread, inside the block, ends `seconds` from now at most."""
    previous = getattr(_local, "deadline", None)
    _local.deadline = time.monotonic() + seconds
    try:
        yield
    finally:
        _local.deadline = previous


def _capped(timeout: float | None, error: type[Exception]) -> float | None:
    deadline = getattr(_local, "deadline", None)
    if deadline is None:
        return timeout
    left = deadline - time.monotonic()
    if left <= 0:
        raise error("the request's deadline passed")
    return left if timeout is None else min(timeout, left)


class _DeadlineStream(httpcore.NetworkStream):
    def __init__(self, inner: httpcore.NetworkStream) -> None:
        self._inner = inner

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, _capped(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, _capped(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self,
        ssl_context: typing.Any,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        inner = self._inner.start_tls(
            ssl_context, server_hostname, _capped(timeout, httpcore.ConnectTimeout)
        )
        return _DeadlineStream(inner)

    def get_extra_info(self, info: str) -> typing.Any:
        return self._inner.get_extra_info(info)


class _DeadlineBackend(httpcore.NetworkBackend):
    def __init__(self, inner: httpcore.NetworkBackend) -> None:
        self._inner = inner

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: typing.Iterable[typing.Any] | None = None,
    ) -> httpcore.NetworkStream:
        stream = self._inner.connect_tcp(
            host,
            port,
            _capped(timeout, httpcore.ConnectTimeout),
            local_address=local_address,
            socket_options=socket_options,
        )
        return _DeadlineStream(stream)

    def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: typing.Iterable[typing.Any] | None = None,
    ) -> httpcore.NetworkStream:
        stream = self._inner.connect_unix_socket(
            path, _capped(timeout, httpcore.ConnectTimeout), socket_options=socket_options
        )
        return _DeadlineStream(stream)

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


def proxy_for(base_url: str, env: Mapping[str, str]) -> str | None:
    """The proxy URL the environment names for `base_url`, or None; ConfigError if it is bad."""
    url = httpx.URL(base_url)
    proxies = {
        scheme.lower(): value for scheme, value in _environment_proxies(env).items() if value
    }
    no_proxy = proxies.pop("no", None)
    if no_proxy and _bypassed(url.host, no_proxy):
        return None
    value = proxies.get(url.scheme) or proxies.get("all")
    if value is None:
        return None
    name = f"{url.scheme.upper()}_PROXY" if url.scheme in proxies else "ALL_PROXY"
    if "://" not in value:
        value = "http://" + value  # curl's reading of a bare host:port
    try:
        parts = urllib.parse.urlsplit(value)
        port = parts.port
        host = parts.hostname or ""
    except ValueError:
        raise ConfigError(f"{name} is not a valid proxy URL: {redact_url(value)!r}") from None
    if parts.scheme.lower() not in _PROXY_SCHEMES:
        raise ConfigError(
            f"{name} {redact_url(value)!r}: ctcli reaches CleverTap through http:// or https:// "
            "proxies only"
        )
    if not is_host_name(host):
        raise ConfigError(f"{name} {redact_url(value)!r}: {host!r} is not a host name")
    if port is not None and not 0 < port < 65536:
        raise ConfigError(f"{name} {redact_url(value)!r}: port {port} is out of range")
    return value


def is_host_name(host: str) -> bool:
    """A DNS name, an IPv4 address or an IPv6 address (without its brackets)."""
    if not host:
        return False
    if ":" in host:
        try:
            ipaddress.IPv6Address(host.split("%", 1)[0])
        except ValueError:
            return False
        return True
    return _HOST_NAME.fullmatch(host) is not None


def _environment_proxies(env: Mapping[str, str]) -> dict[str, str]:
    # urllib reads lower- and upper-case names, lower case winning, as curl does.
    proxies: dict[str, str] = {}
    for name, value in env.items():
        lowered = name.lower()
        if lowered.endswith("_proxy") and value:
            scheme = lowered[: -len("_proxy")]
            if name == lowered or scheme not in proxies:
                proxies[scheme] = value
    return proxies


def _bypassed(host: str, no_proxy: str) -> bool:
    # The standard library's own reading of NO_PROXY (suffixes, ports, "*"); public in
    # practice, though typeshed leaves it out.
    bypass = urllib.request.proxy_bypass_environment  # type: ignore[attr-defined]
    return bool(bypass(host, {"no": no_proxy}))


def make_transport(
    base_url: str, env: Mapping[str, str], limits: httpx.Limits
) -> httpx.HTTPTransport:
    """An HTTP/1.1 transport for `base_url`, through the environment's proxy, with deadlines."""
    transport = httpx.HTTPTransport(
        http1=True, http2=False, limits=limits, proxy=proxy_for(base_url, env)
    )
    pool = getattr(transport, "_pool", None)
    backend = getattr(pool, "_network_backend", None)
    if backend is not None:
        pool._network_backend = _DeadlineBackend(backend)  # type: ignore[union-attr]
    return transport


def check_timeout(seconds: float) -> None:
    """ConfigError unless `seconds` is a usable per-request timeout."""
    if not (math.isfinite(seconds) and seconds > 0):
        raise ConfigError(f"--timeout must be a number of seconds above 0, not {seconds:g}")
