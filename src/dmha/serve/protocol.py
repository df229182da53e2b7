"""uvicorn's HTTP/1.1 protocol (h11) with the limits it lacks against slow or hostile clients.

uvicorn arms its keep-alive timer only once a response is sent, so a client that connects and
sends nothing, or half a request head, holds one of `max_connections` for ever (slow loris); and
after an early refusal (a 413 on the declared length) it reads and drops the rest of the body for
as long as the client keeps sending. Here a connection must deliver a complete request head within
`head_timeout_s` of opening or of its previous response, else it is closed (with a 408 if it had
started one). The answers uvicorn gives itself (unparsable request: 400; too many connections: 503)
are JSON `{"detail": ...}` like the app's.
"""
from __future__ import annotations

import asyncio
import json
import logging
from http import HTTPStatus

import h11
from starlette.responses import JSONResponse
from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger(__name__)


class GuardedH11Protocol(H11Protocol):
    """H11Protocol plus a request-head deadline and JSON protocol errors (see the module docstring)."""

    def __init__(self, *args, head_timeout_s: float = 10.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.head_timeout_s = head_timeout_s
        self._head_timer: asyncio.TimerHandle | None = None
        # uvicorn's own check answers text/plain; the same rule, answered in JSON by _app_or_busy.
        self._max_connections, self.limit_concurrency = self.limit_concurrency, None
        self._app, self.app = self.app, self._app_or_busy

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self._arm_head_timer()

    def connection_lost(self, exc) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    def handle_events(self) -> None:
        super().handle_events()
        if self._serving():
            self._cancel_head_timer()  # a complete head arrived: the app's own upload deadline applies now

    def on_response_complete(self) -> None:
        self._arm_head_timer()  # first: the call below may already start a pipelined request
        super().on_response_complete()

    def send_400_response(self, msg: str) -> None:
        self._answer(400, "invalid HTTP request (malformed, or its request line and headers are too large)")

    async def _app_or_busy(self, scope, receive, send) -> None:
        limit = self._max_connections
        # the same counts as uvicorn's check; this request's task is already among the tasks
        if limit is not None and (len(self.connections) >= limit or len(self.tasks) > limit):
            log.warning("refused a request: %d open connections (limit %d)", len(self.connections), limit)
            busy = JSONResponse({"detail": f"the service has too many open connections (limit {limit}); "
                                           "try again shortly"}, status_code=503, headers={"Retry-After": "1"})
            return await busy(scope, receive, send)
        return await self._app(scope, receive, send)

    def _serving(self) -> bool:
        """The app is handling a request on this connection and has not answered it yet."""
        return self.cycle is not None and not self.cycle.response_complete

    def _arm_head_timer(self) -> None:
        self._cancel_head_timer()
        self._head_timer = self.loop.call_later(self.head_timeout_s, self._head_timeout)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timeout(self) -> None:
        self._head_timer = None
        if self._serving() or self.transport.is_closing():
            return
        started = self.conn.their_state is h11.IDLE and bool(self.conn.trailing_data[0])
        if started:  # half a request head: say why before closing
            self._answer(408, f"the request head did not arrive within {self.head_timeout_s:g} s")
        else:  # idle, or still sending a body the service already answered
            self.transport.close()

    def _answer(self, status: int, detail: str) -> None:
        """Write a JSON error and close; by hand, since h11 sends no response to a request it never parsed."""
        body = json.dumps({"detail": detail}).encode()
        head = (f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\ncontent-type: application/json\r\n"
                f"content-length: {len(body)}\r\nconnection: close\r\n\r\n").encode()
        self.transport.write(head + body)
        self.transport.close()
