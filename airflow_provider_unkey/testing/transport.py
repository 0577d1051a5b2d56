"""The emulator's HTTP transport: a threading server, request framing and writing the answers.

Real HTTP (``http.server``, HTTP/1.1 keep-alive, one thread per connection), so a client under test
exercises its whole stack. The transport knows nothing of Unkey: it hands each request to an
:class:`Application` as a :class:`Request` and writes back the :class:`Reply` it gets, or resets or
drops the connection when the reply says so.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
from dataclasses import dataclass
from email.message import Message
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from io import BufferedIOBase
from typing import Any, Final, Protocol

from airflow_provider_unkey import rules
from airflow_provider_unkey.testing.request_log import RequestRecord
from airflow_provider_unkey.testing.store import random_id

#: Status recorded for a connection reset by :attr:`Faults.reset_rate`.
STATUS_RESET: Final = "reset"
#: Status recorded for a response dropped by :attr:`Faults.drop_after_commit_rate`.
STATUS_DROPPED: Final = "dropped_after_commit"

#: What the transport does with a :class:`Reply`: write it, reset the connection, or close it silently.
RESPOND: Final = "respond"
RESET: Final = "reset"
DROP: Final = "drop"

DRAIN_CHUNK: Final = 65536
DRAIN_TIMEOUT: Final = 10.0


class BodyTooLarge(Exception):
    """The body is over :data:`rules.MAX_BODY_BYTES`."""


class BadFraming(Exception):
    """The body cannot be read as sent (bad ``Content-Length``, bad chunks, or it ended early)."""


class Request:
    """What a route sees of one HTTP request; the body is read on demand."""

    __slots__ = (
        "_body",
        "_rfile",
        "admitted",
        "headers",
        "in_flight",
        "method",
        "path",
        "queued",
        "released",
        "request_id",
        "started",
    )

    def __init__(
        self, method: str, path: str, headers: Message[str, str], rfile: BufferedIOBase, request_id: str
    ) -> None:
        self.method = method
        self.path = path
        self.headers = headers
        self._rfile = rfile
        self.request_id = request_id
        self.started = time.monotonic()
        self._body: bytes | None = None
        # Set by the pipeline's capacity: seconds waited for a slot, when one was granted and given
        # back, and how many requests (this one included) were processed at once when it was granted.
        self.queued = 0.0
        self.admitted: float | None = None
        self.released: float | None = None
        self.in_flight = 0

    def content_length(self) -> int | None:
        """``Content-Length``, or ``None`` without one; :raises BadFraming: when it is not a size."""
        raw = self.headers.get("Content-Length")
        if raw is None:
            return None
        try:
            value = int(raw)
        except ValueError:
            raise BadFraming("Content-Length is not an integer") from None
        if value < 0:
            raise BadFraming("Content-Length is negative")
        return value

    def body(self) -> bytes:
        """The whole body (read once, chunked or not).

        :raises BodyTooLarge: past :data:`rules.MAX_BODY_BYTES`.
        :raises BadFraming: for a body that cannot be read as sent.
        """
        if self._body is None:
            if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
                self._body = self._read_chunked()
            else:
                length = self.content_length() or 0
                if length > rules.MAX_BODY_BYTES:
                    raise BodyTooLarge
                self._body = self._rfile.read(length) if length else b""
                if len(self._body) != length:
                    raise BadFraming("the body ended early")
        return self._body

    def _read_chunked(self) -> bytes:
        parts: list[bytes] = []
        total = 0
        while True:
            line = self._rfile.readline(1024)
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise BadFraming("bad chunk size") from None
            if size == 0:
                while self._rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                if total > rules.MAX_BODY_BYTES:
                    raise BodyTooLarge
                return b"".join(parts)
            total += size
            if total > rules.MAX_BODY_BYTES:
                # Too large: discard the rest (nothing is kept) so the client gets to read the 413.
                parts.clear()
                while size > 0:
                    got = len(self._rfile.read(min(size, DRAIN_CHUNK)))
                    if not got:
                        raise BadFraming("the body ended early")
                    size -= got
            else:
                parts.append(self._rfile.read(size))
            self._rfile.readline(1024)


@dataclass(slots=True)
class Reply:
    """The answer to one request, as the transport writes it (or does not: see ``action``)."""

    status: int
    body: bytes
    problem: bool = False  # an error body: problem+json when the client accepts it
    headers: tuple[tuple[str, str], ...] = ()
    close: bool = False
    drain: int = 0  # bytes of an unread body to discard after answering, so the client sees the answer
    action: str = RESPOND
    fault: str | None = None
    hashes: tuple[str, ...] = ()


def accepts_problem_json(accept: str | None) -> bool:
    """Whether ``Accept`` allows ``application/problem+json`` (no header allows anything)."""
    if accept is None:
        return True
    for item in accept.split(","):
        media, *params = (p.strip() for p in item.split(";"))
        if media.lower() not in ("application/problem+json", "application/*", "*/*"):
            continue
        q = next((p[2:] for p in params if p.lower().startswith("q=")), "1")
        try:
            if float(q) > 0:
                return True
        except ValueError:
            return True
    return False


class Application(Protocol):
    """What the transport needs of the emulator."""

    def _serve(self, req: Request) -> Reply:
        """The answer to ``req``."""

    def _crashed(self, req: Request, exc: Exception) -> Reply:
        """The answer when :meth:`_serve` raised ``exc``."""

    def _record(self, record: RequestRecord) -> None:
        """Log one request, just before it is answered."""


class Server(ThreadingHTTPServer):
    """A threading HTTP server of ``app`` that keeps track of its open connections."""

    daemon_threads = True
    block_on_close = False
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], app: Application) -> None:
        self.app = app
        self._connections: set[socket.socket] = set()
        self._conn_lock = threading.Lock()
        super().__init__(address, Handler)

    def track(self, conn: socket.socket, *, add: bool) -> None:
        """Add an open connection, or forget a closed one."""
        with self._conn_lock:
            if add:
                self._connections.add(conn)
            else:
                self._connections.discard(conn)

    def close(self) -> None:
        """Stop serving and close every connection, idle keep-alive ones included."""
        self.shutdown()
        self.server_close()
        with self._conn_lock:
            connections = list(self._connections)
        for conn in connections:
            # Wakes the handler thread blocked on the next request line; it then ends.
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)


class Handler(BaseHTTPRequestHandler):
    """One connection: each request becomes a :class:`Request`, each :class:`Reply` one write."""

    protocol_version = "HTTP/1.1"
    server_version = "UnkeyEmulator"
    sys_version = ""
    server: Server

    def setup(self) -> None:
        super().setup()
        # One write per response, but small ones must not wait for a delayed ACK either.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.track(self.connection, add=True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.track(self.connection, add=False)

    def log_message(self, format: str, *args: Any) -> None:
        """Silence the per-request stderr log: :attr:`UnkeyEmulator.requests` is the log."""

    def do_GET(self) -> None:
        self._dispatch()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = do_HEAD = do_GET

    def _dispatch(self) -> None:
        app = self.server.app
        req = Request(self.command, self.path.split("?", 1)[0], self.headers, self.rfile, random_id("req_"))
        try:
            reply = app._serve(req)
        except Exception as exc:  # a bug in the emulator must still be an answer, not a hung client
            reply = app._crashed(req, exc)
        finished = time.monotonic()
        if reply.action == RESET:
            status: int | str = STATUS_RESET
        elif reply.action == DROP:
            status = STATUS_DROPPED
        else:
            status = reply.status
        # Log before answering: a client that has its answer must find the request in the log.
        app._record(
            RequestRecord(
                req.method,
                req.path,
                status,
                req.request_id,
                reply.hashes,
                req.started,
                finished,
                reply.fault,
                queued=req.queued,
                admitted=req.admitted,
                released=req.released,
                in_flight=req.in_flight,
            )
        )
        if reply.action == RESET:
            self._abort(reset=True)
            return
        if reply.action == DROP:
            self._abort(reset=False)
            return
        self._write(reply, req)
        if reply.drain:
            self._drain(reply.drain)
        if reply.close:
            self.close_connection = True

    def _write(self, reply: Reply, req: Request) -> None:
        if reply.problem and accepts_problem_json(req.headers.get("Accept")):
            content_type = "application/problem+json"
        else:
            content_type = "application/json"
        lines = [
            f"HTTP/1.1 {reply.status} {HTTPStatus(reply.status).phrase}",
            f"Content-Type: {content_type}",
            f"Content-Length: {len(reply.body)}",
        ]
        lines.extend(f"{name}: {value}" for name, value in reply.headers)
        if reply.close:
            lines.append("Connection: close")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        # One write: headers and body in the same segment(s).
        self.wfile.write(head if req.method == "HEAD" else head + reply.body)

    def _drain(self, remaining: int) -> None:
        # Discard the rest of an oversized body so the client, still sending, gets to read our 413
        # instead of a reset; nothing is kept.
        self.connection.settimeout(DRAIN_TIMEOUT)
        try:
            while remaining > 0:
                chunk = self.rfile.read(min(remaining, DRAIN_CHUNK))
                if not chunk:
                    break
                remaining -= len(chunk)
        except OSError:
            pass

    def _abort(self, *, reset: bool) -> None:
        self.close_connection = True
        if reset:
            # SO_LINGER 0: close() sends RST, and the client sees ECONNRESET rather than an orderly EOF.
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        # rfile holds a reference to the socket: close it first or close() would not close the fd.
        self.rfile.close()
        self.connection.close()
