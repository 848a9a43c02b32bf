"""A pass-through HTTP proxy in front of the live Elasticsearch node that spoils the answer to one
``_bulk`` request the node has applied: holds it back until the client stops waiting (a timeout),
or answers a gateway's 504 instead. Those are what a slow cluster or a proxy before it does, which
the node alone cannot be made to do on cue."""

from __future__ import annotations

import http.client
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Iterator

HOP_BY_HOP = {"connection", "content-length", "host", "keep-alive", "transfer-encoding"}


def spoiled_bulk(target: str, *, delay: float = 0.0, status: int | None = None, nth: int | None = 1,
                 after: int | None = None) -> Iterator[str]:
    """Yield the URL of a proxy to ``target`` whose ``nth`` ``_bulk`` answer (None: every one; with
    ``after``, every one after the first ``after``) comes ``delay`` s late, or (``status``) is replaced
    by an empty answer with that status."""
    upstream = urllib.parse.urlsplit(target)
    bulks = []

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def forward(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else None
            conn = http.client.HTTPConnection(upstream.hostname, upstream.port, timeout=60)
            headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
            conn.request(self.command, self.path, body=body, headers=headers)
            response = conn.getresponse()
            data = response.read()
            conn.close()
            spoil = False
            if urllib.parse.urlsplit(self.path).path.endswith("/_bulk"):
                bulks.append(self.path)
                spoil = len(bulks) > after if after is not None else nth is None or len(bulks) == nth
                if spoil:
                    time.sleep(delay)  # applied by the server; the client's wait runs out
            if spoil and status is not None:
                code, data, headers = status, b"", []
            else:
                code, headers = response.status, response.getheaders()
            try:
                self.send_response(code)
                for key, value in headers:
                    if key.lower() not in HOP_BY_HOP:
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up on this one

        do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = forward

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
    assert len(bulks) >= (nth or 1), "the proxy never spoiled a bulk answer"
