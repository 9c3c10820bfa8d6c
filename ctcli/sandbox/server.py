"""A CleverTap-compatible REST API on loopback, for tests, `--sandbox` and `ctcli sandbox`.

It speaks the two endpoints ctcli uses, `POST /1/upload` and `POST /1/delete/profiles.json`,
with CleverTap's credential headers, its 1000-record and 100-identity limits, its per-record
error codes (1-based record numbers) and its concurrency limit (429 beyond 15 requests in flight).
Faults (failures, dropped connections, latency, whole-batch refusals, a gate that holds requests
until released) can be switched on while it runs, in-process with `Sandbox.set_faults` or over
HTTP with `POST /_sandbox/faults`.

Admin endpoints, loopback test aids that need no credentials and count toward nothing:
`GET /_sandbox/state[?profiles=0]`, `POST /_sandbox/faults`, `POST /_sandbox/release`,
`POST /_sandbox/reset`.

This module is the HTTP side and the `Sandbox` that ties the parts together: what CleverTap
accepts is in `rules`, the faults in `faults`, profiles and statistics in `store`.
"""

from __future__ import annotations

import contextlib
import errno
import hmac
import shlex
import signal
import socket
import socketserver
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, TextIO
from urllib.parse import parse_qs, urlsplit

import orjson

from ctcli.errors import ConfigError
from ctcli.sandbox.faults import FaultInjector, Faults, HoldGate
from ctcli.sandbox.rules import (
    MALFORMED,
    TOO_MANY,
    UNAUTHORIZED,
    Answer,
    Refused,
    delete_names,
    fail_document,
    judge_upload,
    upload_records,
)
from ctcli.sandbox.store import Store, named_identities

__all__ = ["DEFAULT_CREDENTIAL", "Sandbox", "serve"]

DEFAULT_CREDENTIAL = "sandbox"
UPLOAD_PATH = "/1/upload"
DELETE_PATH = "/1/delete/profiles.json"
ADMIN_PREFIX = "/_sandbox/"
MAX_BODY_BYTES = 64 * 1024 * 1024
ACCOUNT_HEADER = "X-CleverTap-Account-Id"
PASSCODE_HEADER = "X-CleverTap-Passcode"

# Set on an answer to have its body sent a byte at a time (the drip fault); never sent itself.
_DRIP_HEADER = "X-Sandbox-Drip"

_NOT_FOUND: Answer = (404, fail_document(404, "Not found"), ())
_NOT_ALLOWED: Answer = (405, fail_document(405, "Method not allowed"), (("Allow", "POST"),))


class Sandbox:
    """The loopback CleverTap API, served from a daemon thread.

    `with Sandbox(project_id="ACC", passcode="pw") as sandbox:` starts it on a free port of
    127.0.0.1; point a client at `sandbox.url`. Every public method is thread-safe.
    """

    def __init__(
        self,
        *,
        project_id: str = DEFAULT_CREDENTIAL,
        passcode: str = DEFAULT_CREDENTIAL,
        host: str = "127.0.0.1",
        port: int = 0,
        max_in_flight: int = 15,
        latency: float = 0.0,
        keep_records: bool = False,
    ) -> None:
        """`latency` seconds are added to every API answer and survive `reset()`.

        `keep_records`: remember every accepted upload record as it came (`records()`).
        """
        if max_in_flight < 1:
            raise ValueError("max_in_flight must be at least 1")
        self.project_id = project_id
        self._account = project_id.encode("utf-8", "surrogateescape")
        self._passcode = passcode.encode("utf-8", "surrogateescape")
        self.host = host
        self.port = port
        self.max_in_flight = max_in_flight
        self._base_latency = float(latency)
        # One lock for the store, the faults and the hold gate, so that state() sees them at one
        # moment and reset() changes them at one moment.
        self._lock = threading.Lock()
        self._store = Store(keep_records=keep_records)
        self._injector = FaultInjector()
        self._gate = HoldGate(self._lock)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # lifecycle

    def start(self) -> Sandbox:
        """Listen and serve in a daemon thread; ConfigError when the port cannot be had."""
        if self._server is not None:
            return self
        try:
            server = _Server((self.host, self.port), self)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise ConfigError(f"port {self.port} on {self.host} is already in use") from None
            raise ConfigError(f"cannot listen on {self.host}:{self.port}: {exc.strerror}") from None
        self.port = server.server_address[1]
        self._server = server
        # A short poll interval keeps stop() quick; idle cost is a few wake-ups a second.
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"ctcli-sandbox-{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening, let held requests go and close open keep-alive connections.

        Safe to call twice.
        """
        server, thread = self._server, self._thread
        if server is None:
            return
        self._server = self._thread = None
        with self._lock:
            self._gate.release()
        server.shutdown()
        server.close_connections()
        server.server_close()
        if thread is not None:
            thread.join(timeout=5)

    def __enter__(self) -> Sandbox:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """Base URL, like `http://127.0.0.1:PORT` (the real port once started)."""
        return f"http://{self.host}:{self.port}"

    # faults

    def set_faults(
        self,
        *,
        fail_every: int = 0,
        fail_status: int = 500,
        fail_body: dict[str, Any] | None = None,
        drop_every: int = 0,
        latency: float = 0.0,
        jitter: float = 0.0,
        drip: float = 0.0,
        retry_after: float | None = None,
        bad_batch_marker: str | None = None,
        hold: bool = False,
        stall_request: int = 0,
    ) -> None:
        """Replace the fault settings and restart the fault request counter at zero.

        The counter numbers (from 1) each API request that passes the credential and
        concurrency checks; admin requests, 401s and 429s are not numbered. Request n is
        dropped when `drop_every` divides n (its body read, the connection closed, no answer);
        otherwise it is answered `fail_status` when `fail_every` divides n. Failed and dropped
        requests are not processed. `latency` seconds pass before every API answer, while the
        request counts as in flight, plus a random share of `jitter` seconds drawn per request:
        requests then overtake each other, and since the sandbox applies each request's records
        when it processes them, a client that sends one identity twice at once loses its order.
        With `drip`, an API answer's headers go at once and its body one byte every `drip`
        seconds (after the records were applied): a read timeout never fires on such a server.
        With `bad_batch_marker`, an upload holding any record whose
        identity starts with it is refused as a whole with 400 Malformed request.

        With `hold`, each such request waits, in flight, before anything else happens to it, until
        `release()` (`POST /_sandbox/release`), `reset()`, `stop()` or new fault settings without
        `hold` let it go; it then goes on under the faults it was admitted with. Holding stays on
        after a release: later requests are held again. `stall_request` n holds request n alone
        that way (one slow batch among quick ones). `stats()["held"]` says how many wait now
        and `wait_held(n)` waits for n of them: a deterministic stand-in for "slow enough".
        """
        faults = Faults(
            fail_every=fail_every,
            fail_status=fail_status,
            fail_body=dict(fail_body) if fail_body is not None else None,
            drop_every=drop_every,
            latency=latency,
            jitter=jitter,
            drip=drip,
            retry_after=retry_after,
            bad_batch_marker=bad_batch_marker,
            hold=hold,
            stall_request=stall_request,
        )
        with self._lock:
            self._injector.replace(faults)
            if not (hold or stall_request):
                self._gate.release()

    def release(self) -> int:
        """Let every request held right now go on; returns how many. Holding stays on."""
        with self._lock:
            return self._gate.release()

    def wait_held(self, count: int, timeout: float | None = None) -> bool:
        """Wait until at least `count` requests are held; False if `timeout` seconds pass first."""
        return self._gate.wait_held(count, timeout)

    def clear_faults(self) -> None:
        """Switch every fault off."""
        self.set_faults()

    def faults(self) -> dict[str, Any]:
        """The current fault settings, as set_faults keyword arguments."""
        with self._lock:
            return asdict(self._injector.settings)

    # introspection

    def profiles(self) -> dict[str, dict[str, Any]]:
        """A copy of the stored profiles: identity -> {"profileData": {...}, "ts": int}."""
        with self._lock:
            return self._store.profile_copies()

    def records(self) -> list[dict[str, Any]]:
        """Every accepted upload record in arrival order, as sent: {"identity", "ts",
        "profileData"}. Needs `keep_records=True`."""
        with self._lock:
            if self._store.records is None:
                raise RuntimeError("records are kept only by a Sandbox(keep_records=True)")
            return [dict(record) for record in self._store.records]

    def profile_count(self) -> int:
        with self._lock:
            return len(self._store.profiles)

    def deleted(self) -> list[str]:
        """Every identity or guid named in a delete request, in the order received."""
        with self._lock:
            return list(self._store.deleted)

    def stats(self) -> dict[str, Any]:
        """Counters since start or reset.

        requests: every non-admin request; upload_requests / delete_requests: those the sandbox
        went on to read (authenticated, admitted, not failed or dropped by a fault);
        batch_sizes / delete_sizes: record or identity count of each one it processed;
        status_counts: HTTP status -> answers; dropped and faults_injected: fault outcomes;
        max_in_flight_seen: peak of admitted requests in flight at once; held: requests the
        `hold` fault keeps waiting right now (not reset by `reset()`, which lets them go).
        """
        with self._lock:
            return self._stats_snapshot()

    def _stats_snapshot(self) -> dict[str, Any]:
        data = self._store.stats.snapshot()
        data["held"] = self._gate.held
        return data

    def reset(self) -> None:
        """Forget profiles, deletions and statistics, switch faults off, let held requests go."""
        with self._lock:
            self._store.clear()
            self._injector.replace(Faults())
            self._gate.release()

    def state(self, *, include_profiles: bool = True) -> dict[str, Any]:
        """What `GET /_sandbox/state` answers."""
        with self._lock:
            state: dict[str, Any] = {}
            if include_profiles:
                state["profiles"] = self._store.profile_copies()
            else:
                state["profile_count"] = len(self._store.profiles)
            state["deleted"] = list(self._store.deleted)
            state["stats"] = self._stats_snapshot()
            state["faults"] = asdict(self._injector.settings)
            return state

    # request handling (called from the server's handler threads)

    def _record_status(self, answer: Answer) -> Answer:
        with self._lock:
            self._store.stats.status_counts[answer[0]] += 1
        return answer

    def _handle_api(
        self, method: str, path: str, account: str | None, passcode: str | None, body: bytes
    ) -> Answer | None:
        """The answer to an API request; None to drop the connection without one."""
        with self._lock:
            self._store.stats.requests += 1
        if path not in (UPLOAD_PATH, DELETE_PATH):
            return self._record_status(_NOT_FOUND)
        if method != "POST":
            return self._record_status(_NOT_ALLOWED)
        if not (_same(account, self._account) and _same(passcode, self._passcode)):
            return self._record_status(UNAUTHORIZED)
        with self._lock:
            if not self._store.admit(self.max_in_flight):
                self._store.stats.status_counts[429] += 1
                return TOO_MANY
            planned = self._injector.admit()
        try:
            document = _parse_body(body)
            names = named_identities(document, upload=path == UPLOAD_PATH)
        except ValueError:
            document, names = None, []
        with self._lock:
            self._store.mark_busy(names)
        try:
            settings = planned.settings
            if planned.held:
                self._hold()
            delay = self._base_latency + settings.latency + planned.jitter
            if delay > 0:
                time.sleep(delay)
            if planned.dropped:
                with self._lock:
                    self._store.stats.dropped += 1
                    self._store.stats.faults_injected += 1
                return None
            if planned.failed:
                with self._lock:
                    self._store.stats.faults_injected += 1
                return self._record_status(settings.failure())
            try:
                if path == UPLOAD_PATH:
                    answer = self._upload(document, settings)
                else:
                    answer = self._delete(document)
            except Refused as refusal:
                answer = refusal.answer
            if settings.drip:
                answer = (*answer[:2], (*answer[2], (_DRIP_HEADER, f"{settings.drip:g}")))
            return self._record_status(answer)
        finally:
            with self._lock:
                self._store.leave(names)

    def _hold(self) -> None:
        with self._lock:
            if self._server is None:
                return  # stopping: nothing would ever release it
            self._gate.hold()

    def _upload(self, document: Any, faults: Faults) -> Answer:
        with self._lock:
            self._store.stats.upload_requests += 1
        records = upload_records(document)
        if faults.refuses_batch(records):
            return MALFORMED
        verdict = judge_upload(records)
        now = int(time.time())
        with self._lock:
            self._store.apply_upload(verdict, now)
        return verdict.answer()

    def _delete(self, document: Any) -> Answer:
        with self._lock:
            self._store.stats.delete_requests += 1
        names = delete_names(document)
        with self._lock:
            self._store.apply_delete(names)
        return 200, b'{"status":"success"}', ()

    def _handle_admin(self, method: str, path: str, query: str, body: bytes) -> Answer:
        if path == "/_sandbox/state" and method == "GET":
            include = parse_qs(query).get("profiles", ["1"])[-1] not in ("0", "false", "no")
            state = self.state(include_profiles=include)
            return 200, orjson.dumps(state, option=orjson.OPT_NON_STR_KEYS), ()
        if path == "/_sandbox/faults" and method == "POST":
            try:
                settings = orjson.loads(body) if body.strip() else {}
                if type(settings) is not dict:
                    raise TypeError("faults must be a JSON object")
                self.set_faults(**settings)
            except (orjson.JSONDecodeError, TypeError, ValueError) as exc:
                return 400, fail_document(400, f"Bad faults: {exc}"), ()
            return 200, orjson.dumps({"status": "success", "faults": self.faults()}), ()
        if path == "/_sandbox/release" and method == "POST":
            released = self.release()
            return 200, orjson.dumps({"status": "success", "released": released}), ()
        if path == "/_sandbox/reset" and method == "POST":
            self.reset()
            return 200, b'{"status":"success"}', ()
        return _NOT_FOUND


def _parse_body(body: bytes) -> Any:
    """The JSON document of a request body; ValueError when it is not JSON."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        raise ValueError("not JSON") from None


def _same(given: str | None, expected: bytes) -> bool:
    if given is None:
        return False
    return hmac.compare_digest(given.encode("utf-8", "surrogateescape"), expected)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # Idle keep-alive connections would make server_close() wait on their threads forever.
    block_on_close = False
    # The default backlog of 5 drops SYNs when 15 clients connect at once.
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], sandbox: Sandbox) -> None:
        self.sandbox = sandbox
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind does a reverse DNS lookup of the host, which can stall.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client hanging up mid-answer is normal traffic, not a sandbox bug.
        if isinstance(sys.exc_info()[1], OSError):
            return
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "ctcli-sandbox"
    # Buffer the answer so headers and body leave in one write (no Nagle/delayed-ACK stall).
    wbufsize = -1
    disable_nagle_algorithm = True
    timeout = 300
    server: _Server

    def version_string(self) -> str:
        return self.server_version

    def log_message(self, format: str, *args: Any) -> None:
        # Never log: request headers carry the passcode.
        return

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def _dispatch(self, method: str) -> None:
        body = self._read_body()
        if body is None:
            return
        parts = urlsplit(self.path)
        sandbox = self.server.sandbox
        try:
            if parts.path.startswith(ADMIN_PREFIX):
                answer: Answer | None = sandbox._handle_admin(method, parts.path, parts.query, body)
            else:
                answer = sandbox._handle_api(
                    method,
                    parts.path,
                    self.headers.get(ACCOUNT_HEADER),
                    self.headers.get(PASSCODE_HEADER),
                    body,
                )
        except Exception:
            answer = (500, fail_document(500, "Internal sandbox error"), ())
            self.close_connection = True
        if answer is None:
            self.close_connection = True
            return
        self._send(*answer)

    def _read_body(self) -> bytes | None:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self._read_chunked()
        length_header = self.headers.get("Content-Length")
        if length_header is None:
            return b""
        try:
            length = int(length_header)
        except ValueError:
            length = -1
        if length < 0 or length > MAX_BODY_BYTES:
            self.close_connection = True
            self._send(*MALFORMED)
            return None
        return self.rfile.read(length)

    def _read_chunked(self) -> bytes | None:
        chunks: list[bytes] = []
        total = 0
        while True:
            size_line = self.rfile.readline(1024)
            try:
                size = int(size_line.split(b";")[0].strip(), 16)
            except ValueError:
                size = -1
            total += size
            if size < 0 or total > MAX_BODY_BYTES:
                self.close_connection = True
                self._send(*MALFORMED)
                return None
            if size == 0:
                # Skip optional trailers up to the blank line that ends the message.
                while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                    pass
                return b"".join(chunks)
            chunks.append(self.rfile.read(size))
            self.rfile.readline(1024)

    def _send(self, status: int, body: bytes, headers: tuple[tuple[str, str], ...]) -> None:
        drip = 0.0
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers:
            if name == _DRIP_HEADER:
                drip = float(value)
            else:
                self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if not drip:
            self.wfile.write(body)
            return
        self.wfile.flush()
        for index in range(len(body)):
            if self.server.sandbox._server is None:
                return  # stopping
            time.sleep(drip)
            self.wfile.write(body[index : index + 1])
            self.wfile.flush()


# --- foreground server -----------------------------------------------------------------------


def _connection_hint(url: str, project_id: str, passcode: str) -> str:
    # Never echo a chosen passcode: name where it lives instead.
    shown = passcode if passcode == DEFAULT_CREDENTIAL else '"$CTCLI_SANDBOX_PASSCODE"'
    return (
        f"CLEVERTAP_ENDPOINT={url} CLEVERTAP_PROJECT_ID={shlex.quote(project_id)} "
        f"CLEVERTAP_PASSCODE={shown}"
    )


@contextlib.contextmanager
def _stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """Make SIGTERM (and Ctrl-C, unless ignored) set `stop`; only the main thread can."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous: dict[int, Any] = {}

    def handler(signum: int, frame: Any) -> None:
        stop.set()

    previous[signal.SIGTERM] = signal.signal(signal.SIGTERM, handler)
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        previous[signal.SIGINT] = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


def serve(
    port: int = 8080,
    *,
    project_id: str = DEFAULT_CREDENTIAL,
    passcode: str = DEFAULT_CREDENTIAL,
    latency: float = 0.0,
    out: TextIO,
    host: str = "127.0.0.1",
    stop: threading.Event | None = None,
) -> None:
    """Run the sandbox in the foreground until Ctrl-C, SIGTERM or `stop` is set.

    Prints `CleverTap sandbox listening on http://127.0.0.1:PORT` (the real port when `port`
    is 0), then the environment that points ctcli at it; prints `sandbox stopped` at the end.
    Raises ConfigError when the port is taken.
    """
    stop = stop if stop is not None else threading.Event()
    sandbox = Sandbox(
        project_id=project_id, passcode=passcode, host=host, port=port, latency=latency
    )
    sandbox.start()
    try:
        with _stop_on_signals(stop):
            out.write(f"CleverTap sandbox listening on {sandbox.url}\n")
            out.write(_connection_hint(sandbox.url, project_id, passcode) + "\n")
            out.write("Press Ctrl-C to stop.\n")
            out.flush()
            while not stop.wait(0.5):
                pass
    except KeyboardInterrupt:
        pass
    finally:
        sandbox.stop()
    out.write("sandbox stopped\n")
    out.flush()
