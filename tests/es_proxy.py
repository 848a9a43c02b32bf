"""A pass-through HTTP proxy in front of the live Elasticsearch node that holds back the answer to
the first ``_bulk`` request: the server has applied it, the client has stopped waiting. That is a
bulk request timing out for real, which the node alone cannot be made to do on cue."""

from __future__ import annotations

import http.client
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Iterator

HOP_BY_HOP = {"connection", "content-length", "host", "keep-alive", "transfer-encoding"}


def slow_first_bulk(target: str, delay: float) -> Iterator[str]:
    """Yield the URL of a proxy to ``target`` whose first ``_bulk`` answer comes ``delay`` s late."""
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
            if urllib.parse.urlsplit(self.path).path.endswith("/_bulk"):
                bulks.append(self.path)
                if len(bulks) == 1:
                    time.sleep(delay)  # applied by the server; the client's wait runs out
            try:
                self.send_response(response.status)
                for key, value in response.getheaders():
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
    assert bulks, "the proxy saw no bulk request"
