"""What every API request goes through before its route: routing, framing, faults, auth, rate limit.

In the real server's order: the route (404 for an unknown one), 413 from ``Content-Length`` alone,
the request's faults (a reset before anything is read), the body; then, as Unkey's middleware chain
does (``svc/api/routes/register.go``: validation, then authentication with the workspace rate limit),
a missing ``Authorization`` header and a body that is not JSON or fails its route's schema (400),
authentication (400 for a malformed header, 401) and the workspace rate limit (429), all answered at
once, unless a 429 or an error is injected; then the processing: a capacity slot waited for in FIFO
order, the injected latency spent holding it (408 once the time since the request was read, queueing
included, passes the server timeout), injected 429s and errors, and only then the route itself.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from airflow_provider_unkey import rules
from airflow_provider_unkey.testing import replies
from airflow_provider_unkey.testing.capacity import Capacity
from airflow_provider_unkey.testing.faults import FaultDraw, FaultSource
from airflow_provider_unkey.testing.production import Production
from airflow_provider_unkey.testing.ratelimit import RateLimiter
from airflow_provider_unkey.testing.replies import (
    ERR_AUTH_MALFORMED,
    ERR_AUTH_MISSING,
    ERR_KEY_NOT_FOUND,
    ERR_ROUTE_NOT_FOUND,
)
from airflow_provider_unkey.testing.routes import (
    PATH_GET_API,
    PATH_LIVENESS,
    PATH_MIGRATE,
    PATH_VERIFY,
    Route,
    Routes,
    Settings,
)
from airflow_provider_unkey.testing.schemas import decode_json, hashes_of
from airflow_provider_unkey.testing.store import RootKey, Store
from airflow_provider_unkey.testing.transport import RESET, BadFraming, BodyTooLarge, Reply, Request

#: The last stage of :meth:`Pipeline.serve`, which the emulator lets a test wrap.
DelayAndRoute = Callable[[Request, Route, Any, int, FaultDraw], Reply]


class Pipeline:
    """The request pipeline in front of :class:`~airflow_provider_unkey.testing.routes.Routes`."""

    def __init__(
        self,
        store: Store,
        faults: FaultSource,
        limiter: RateLimiter,
        routes: Routes,
        settings: Settings,
        capacity: Capacity,
        production: Production,
    ) -> None:
        self._store = store
        self._production = production
        self._capacity = capacity
        self._faults = faults
        self._limiter = limiter
        self._routes = routes
        self._settings = settings

    def serve(self, req: Request, delay_and_route: DelayAndRoute) -> Reply:
        """The answer to ``req``; its last stage is ``delay_and_route`` (normally :meth:`delay_and_route`)."""
        route: Route
        if req.path == PATH_LIVENESS and req.method in ("GET", "HEAD"):
            return self._routes.liveness(req)
        if req.method == "POST" and req.path == PATH_MIGRATE:
            route = self._routes.migrate
        elif req.method == "POST" and req.path == PATH_VERIFY:
            route = self._routes.verify
        elif req.method == "POST" and req.path == PATH_GET_API:
            route = self._routes.get_api
        else:
            return self._drained(req, replies.error(req, 404, "Route not found.", ERR_ROUTE_NOT_FOUND))

        # 413 first, from Content-Length alone: an oversized body is never buffered.
        try:
            length = req.content_length()
        except BadFraming as exc:
            return replies.bad_framing(req, exc, "header.Content-Length")
        if length is not None and length > rules.MAX_BODY_BYTES:
            return replies.too_large(req, drain=length)

        draw = self._faults.draw()
        if draw.reset:
            return Reply(0, b"", action=RESET, fault="reset")

        try:
            raw = req.body()
        except BodyTooLarge:
            return replies.too_large(req, drain=0)
        except BadFraming as exc:
            return replies.bad_framing(req, exc, "body")
        body = decode_json(raw)
        hashes = hashes_of(body) if req.path == PATH_MIGRATE else ()
        reply = delay_and_route(req, route, body, len(hashes), draw)
        reply.hashes = hashes
        return reply

    def delay_and_route(self, req: Request, route: Route, body: Any, n_keys: int, draw: FaultDraw) -> Reply:
        """Validate, authenticate and count the request, then process it holding a capacity slot.

        Validation (a missing ``Authorization`` header, a body the route's schema refuses),
        authentication and the workspace rate limit answer at once (their 400/401/429 take no slot and
        no latency), and only a request that passed validation and authentication counts; a request
        they let through, and one that gets an injected 429 or error, waits for a slot, spends its
        latency holding it, and is answered 408 when the server timeout passes first. Every answer
        to a counted request carries the workspace's quota headers, a 408 too.
        """
        quota = None
        root = None
        if draw.storm_retry_after is None and draw.error_status is None:
            refused = self._missing_authorization(req) or self._routes.refused_body(req, body)
            if refused is not None:
                return refused
            authenticated = self._authenticate(req)
            if isinstance(authenticated, Reply):
                return authenticated
            root = authenticated
            now = self._limiter.now()
            # Production traffic due by now counts first: the limiter sees requests in time order.
            self._production.advance(now)
            quota = self._limiter.count(root.workspace_id, now)
            if quota is not None and not quota.allowed:
                return replies.too_many_requests(req, self._limiter.detail(quota.limit), quota)
        reply = self._hold_slot(req, route, body, n_keys, draw, root)
        if quota is not None:
            # A limited workspace sees its quota on every answer, whatever the status.
            reply.headers += quota.headers()
        return reply

    def _hold_slot(
        self, req: Request, route: Route, body: Any, n_keys: int, draw: FaultDraw, root: RootKey | None
    ) -> Reply:
        """Wait for a capacity slot (FIFO) and process the request holding it; 408 past the timeout."""
        server_timeout = self._settings.server_timeout
        deadline = req.started + server_timeout
        enqueued = time.monotonic()
        slot = self._capacity.acquire(deadline)
        if slot is None:
            # The timeout counts the time spent queued: nothing was processed, nothing committed.
            req.queued = time.monotonic() - enqueued
            return replies.timeout(req, server_timeout, "queue_timeout")
        req.queued = slot.queued
        req.admitted, req.in_flight = slot.admitted, slot.in_flight
        try:
            if req.queued > 0 and slot.admitted >= deadline:
                # Granted just as the deadline passed.
                return replies.timeout(req, server_timeout, "queue_timeout")
            return self._process(req, route, body, n_keys, draw, root, deadline)
        finally:
            req.released = self._capacity.release()

    def _process(
        self,
        req: Request,
        route: Route,
        body: Any,
        n_keys: int,
        draw: FaultDraw,
        root: RootKey | None,
        deadline: float,
    ) -> Reply:
        """Sleep the injected latency (the processing time), answer an injected fault, or route."""
        delay = draw.latency + draw.latency_per_key * n_keys
        fault = "latency" if delay > 0 else None
        if delay > 0:
            left = deadline - time.monotonic()
            if delay >= left:
                time.sleep(max(0.0, left))
                return replies.timeout(req, self._settings.server_timeout, fault)
            time.sleep(delay)
        if draw.storm_retry_after is not None:
            return replies.too_many_requests(
                req,
                "Too many requests: the workspace is being rate limited.",
                self._limiter.exhausted(draw.storm_retry_after),
                fault="rate_limit_storm",
            )
        if draw.error_status == 429:
            # Reset and Retry-After as the limiter would report them now: the current window's end.
            return replies.too_many_requests(req, "Injected fault.", self._limiter.exhausted(), fault="error")
        if draw.error_status is not None:
            error_status = draw.error_status
            return replies.error(
                req, error_status, "Injected fault.", replies.error_type(error_status), fault="error"
            )
        assert root is not None  # authenticated by delay_and_route when no fault was injected
        reply = route(req, body, root)
        if reply.fault is None:
            reply.fault = fault
        return reply

    @staticmethod
    def _drained(req: Request, reply: Reply) -> Reply:
        # Keep the connection usable after a 404: consume a (reasonably sized) body.
        try:
            length = req.content_length()
            if length is not None and length > rules.MAX_BODY_BYTES:
                reply.close, reply.drain = True, length
            else:
                req.body()
        except (BadFraming, BodyTooLarge):
            reply.close = True
        return reply

    @staticmethod
    def _missing_authorization(req: Request) -> Reply | None:
        """The 400 for a missing ``Authorization`` header (Unkey's OpenAPI validation refuses it)."""
        header = req.headers.get("Authorization")
        if header is None or not header.strip():
            return replies.error(
                req,
                400,
                "Authorization header is missing, but required.",
                ERR_AUTH_MISSING,
                errors=[
                    {
                        "location": "header.Authorization",
                        "message": "is required",
                        "fix": "send 'Authorization: Bearer <root key>'",
                    }
                ],
            )
        return None

    def _authenticate(self, req: Request) -> RootKey | Reply:
        """The root key of a request that has an ``Authorization`` header, or its 400/401."""
        header = req.headers.get("Authorization", "").strip()
        token = header[7:].strip() if header.startswith("Bearer ") else ""
        if not token:
            return replies.error(
                req,
                400,
                "Authorization header must be 'Bearer <root key>'.",
                ERR_AUTH_MALFORMED,
                errors=[{"location": "header.Authorization", "message": "must be 'Bearer <root key>'"}],
            )
        root = self._store.root_keys.get(token)
        if root is None:
            return replies.error(req, 401, "The provided root key was not found.", ERR_KEY_NOT_FOUND)
        return root
