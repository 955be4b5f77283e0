"""A static file server for pulls, with strong ETags: what nginx or a CDN does for the agent.

``python serve.py DIR PORT`` serves the files in DIR on 127.0.0.1:PORT. Every response carries
``ETag: "<sha256 of the file>"`` and ``Last-Modified``; a GET whose ``If-None-Match`` matches the
current ETag gets ``304 Not Modified`` with no body. Each request is logged to stdout as
``GET /core.jwt -> 200`` (or 304), so the example can show what the agent asked for.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.server
import sys
from email.utils import formatdate
from pathlib import Path


def make_handler(root: Path) -> type[http.server.BaseHTTPRequestHandler]:
    """A handler class serving files under ``root`` (no directory listing, no ``..``)."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            name = self.path.split("?", 1)[0].lstrip("/")
            path = (root / name).resolve()
            if root not in path.parents or not path.is_file():
                self.answer(404)
                return
            data = path.read_bytes()
            etag = '"' + hashlib.sha256(data).hexdigest() + '"'
            headers = {
                "ETag": etag,
                "Last-Modified": formatdate(path.stat().st_mtime, usegmt=True),
            }
            if etag in (self.headers.get("If-None-Match") or ""):
                self.answer(304, headers)
                return
            self.answer(200, headers, data)

        def answer(
            self, status: int, headers: dict[str, str] | None = None, body: bytes = b""
        ) -> None:
            self.send_response_only(status)
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            if status != 304:
                self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if status != 304:
                self.wfile.write(body)
            print(f"GET {self.path} -> {status}", flush=True)

        def log_message(self, format: str, *args: object) -> None:
            return

    return Handler


def main(argv: list[str]) -> int:
    root, port = Path(argv[0]).resolve(), int(argv[1])
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), make_handler(root))
    print(f"serving {root} on http://127.0.0.1:{port}/", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
