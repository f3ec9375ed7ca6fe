"""A real HTTP server on 127.0.0.1 for download tests, with misbehaviours on demand.

Each path is a `Route`: the body, plus how to misbehave (drop the connection half-way, ignore
Range, answer 404/500 first, stall). Every request is logged with its Range header and status so
tests can assert what the client asked for.
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

_RANGE = re.compile(r"bytes=(\d+)-$")


@dataclass
class Route:
    body: bytes
    ignore_range: bool = False  # always answer 200 with the whole body
    drops: int = 0  # this many requests send `drop_after` body bytes, then close the connection
    drop_after: int = 0
    fail_statuses: list[int] = field(default_factory=list)  # answered first, one per request
    delay: float = 0.0  # seconds before answering (a stalled server)
    chunk_delay: float = 0.0  # seconds between 4 KiB chunks (a slow transfer)


@dataclass
class Logged:
    path: str
    range: str | None
    status: int


class _Handler(BaseHTTPRequestHandler):
    server: LocalServer._Server

    def log_message(self, format: str, *args: object) -> None:  # quiet
        pass

    def do_GET(self) -> None:
        owner = self.server.owner
        path = self.path.lstrip("/")
        rng = self.headers.get("Range")
        route = owner.routes.get(path)
        with owner.lock:
            status = route.fail_statuses.pop(0) if route and route.fail_statuses else None
        if route is None or status is not None:
            status = status or 404
            owner.log.append(Logged(path, rng, status))
            self.send_error(status)
            return
        if route.delay:
            time.sleep(route.delay)
        body, start = route.body, 0
        match = _RANGE.match(rng or "")
        if match and not route.ignore_range:
            start = int(match.group(1))
            if start >= len(body):
                owner.log.append(Logged(path, rng, 416))
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
            owner.log.append(Logged(path, rng, 206))
        else:
            self.send_response(200)
            owner.log.append(Logged(path, rng, 200))
        payload = body[start:]
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Accept-Ranges", "none" if route.ignore_range else "bytes")
        self.end_headers()
        with owner.lock:
            drop = route.drops > 0
            route.drops -= int(drop)
        if drop:
            payload = payload[: route.drop_after]
        try:
            for i in range(0, len(payload), 4096):
                self.wfile.write(payload[i : i + 4096])
                self.wfile.flush()
                if route.chunk_delay:
                    time.sleep(route.chunk_delay)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout tests)
            self.close_connection = True
            return
        if drop:
            self.close_connection = True


class LocalServer:
    """`with LocalServer() as srv: srv.add("f.bin", Route(b"...")); srv.url("f.bin")`."""

    class _Server(ThreadingHTTPServer):
        daemon_threads = True
        owner: LocalServer

    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.log: list[Logged] = []
        self.lock = threading.Lock()
        self._server = self._Server(("127.0.0.1", 0), _Handler)
        self._server.owner = self
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)

    def add(self, path: str, route: Route) -> str:
        self.routes[path] = route
        return self.url(path)

    def url(self, path: str) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/{path}"

    def requests(self, path: str) -> list[Logged]:
        return [entry for entry in self.log if entry.path == path]

    def __enter__(self) -> LocalServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
