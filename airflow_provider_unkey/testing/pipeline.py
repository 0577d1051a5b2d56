"""What every API request goes through before its route: routing, framing, faults, auth, rate limit.

In the real server's order: the route (404 for an unknown one), 413 from ``Content-Length`` alone,
the request's faults (a reset before anything is read), the body, the injected latency (408 past
the server timeout), injected 429s and errors, authentication, the workspace rate limit, and only
then the route itself.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from airflow_provider_unkey import rules
from airflow_provider_unkey.testing import replies
from airflow_provider_unkey.testing.faults import FaultDraw, FaultSource
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
from airflow_provider_unkey.testing.store import RateLimiter, RootKey, Store
from airflow_provider_unkey.testing.transport import RESET, BadFraming, BodyTooLarge, Reply, Request

#: The last stage of :meth:`Pipeline.serve`, which the emulator lets a test wrap.
DelayAndRoute = Callable[[Request, Route, Any, int, FaultDraw], Reply]


class Pipeline:
    """The request pipeline in front of :class:`~airflow_provider_unkey.testing.routes.Routes`."""

    def __init__(
        self, store: Store, faults: FaultSource, limiter: RateLimiter, routes: Routes, settings: Settings
    ) -> None:
        self._store = store
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
        """Sleep the injected latency, answer an injected fault, or authenticate, count and route."""
        delay = draw.latency + draw.latency_per_key * n_keys
        fault = "latency" if delay > 0 else None
        if delay > 0:
            server_timeout = self._settings.server_timeout
            left = req.started + server_timeout - time.monotonic()
            if delay >= left:
                time.sleep(max(0.0, left))
                return replies.timeout(req, server_timeout, fault)
            time.sleep(delay)
        if draw.storm_retry_after is not None:
            return replies.too_many_requests(
                req,
                "Too many requests: the workspace is being rate limited.",
                self._limiter.exhausted(draw.storm_retry_after),
                fault="rate_limit_storm",
            )
        if draw.error_status == 429:
            return replies.too_many_requests(
                req, "Injected fault.", self._limiter.exhausted(1), fault="error"
            )
        if draw.error_status is not None:
            error_status = draw.error_status
            return replies.error(
                req, error_status, "Injected fault.", replies.error_type(error_status), fault="error"
            )

        root = self._authenticate(req)
        if isinstance(root, Reply):
            return root
        quota = self._limiter.count(root.workspace_id)
        if quota is not None and not quota.allowed:
            return replies.too_many_requests(
                req,
                f"The workspace exceeded its rate limit of {quota.limit} requests per "
                f"{self._limiter.window:g} s.",
                quota,
            )
        reply = route(req, body, root)
        if quota is not None:
            # A limited workspace sees its quota on every answer, whatever the status.
            reply.headers += quota.headers()
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

    def _authenticate(self, req: Request) -> RootKey | Reply:
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
        header = header.strip()
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
