"""A counting HTTP proxy in front of a real S3 endpoint: every request is forwarded unchanged (the Host header
too, so signatures still match) and counted by method and kind (``list``: a ListObjects request; ``object``:
anything else), for tests that check how many requests a reader makes; ``delay_s`` adds that much latency to
every request (benchmarks/input_s3.py: a network between the workers and the store); ``down_after_puts``: after
that many PUT requests to paths containing ``down_match`` the endpoint is "lost": every later request is dropped without an answer (its path
recorded in ``.dropped``) until ``.down_after_puts`` is set to None."""
import http.client
import threading
import time
import urllib.parse
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class CountingProxy:
    """``CountingProxy("http://127.0.0.1:PORT")``: ``.endpoint`` to use instead, ``.counts`` per
    ``(method, kind)``, ``.close()`` when done."""

    def __init__(self, target: str, delay_s: float = 0.0, down_after_puts: int | None = None, down_match: str = ""):
        self.target = urllib.parse.urlparse(target).netloc
        self.delay_s = delay_s
        self.down_after_puts = down_after_puts
        self.down_match = down_match
        self.puts_matched = 0
        self.dropped: list[str] = []
        self.counts: Counter = Counter()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def _forward(self):
                if proxy.down_after_puts is not None and proxy.puts_matched >= proxy.down_after_puts:
                    proxy.dropped.append(urllib.parse.urlparse(self.path).path)
                    self.close_connection = True  # no answer at all: the endpoint is gone
                    return
                query = urllib.parse.urlparse(self.path).query
                if self.command == "PUT" and proxy.down_match in urllib.parse.urlparse(self.path).path:
                    proxy.puts_matched += 1
                kind = "list" if "list-type" in query or "delimiter" in query else "object"
                proxy.counts[(self.command, kind)] += 1
                if proxy.delay_s:
                    time.sleep(proxy.delay_s)
                headers = dict(self.headers.items())
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":  # uploads: forward whole
                    body = self._read_chunked()
                    headers = {k: v for k, v in headers.items() if k.lower() != "transfer-encoding"}
                    headers["Content-Length"] = str(len(body))
                else:
                    length = int(self.headers.get("Content-Length") or 0)
                    body = self.rfile.read(length) if length else None
                conn = http.client.HTTPConnection(proxy.target, timeout=30)
                conn.request(self.command, self.path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                self.send_response(resp.status)
                for k, v in resp.getheaders():
                    if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)) if self.command != "HEAD" else resp.getheader("Content-Length", "0"))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
                conn.close()

            def _read_chunked(self) -> bytes:
                parts = []
                while True:
                    size = int(self.rfile.readline().split(b";", 1)[0].strip() or b"0", 16)
                    if size == 0:
                        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                            pass
                        return b"".join(parts)
                    parts.append(self.rfile.read(size))
                    self.rfile.readline()

            do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = _forward

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()
