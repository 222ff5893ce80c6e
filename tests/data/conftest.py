"""A local HTTP server on 127.0.0.1 standing in for the datasets' download hosts."""

import functools
import http.server
import threading
import time
from collections import Counter

import pytest


class _Handler(http.server.SimpleHTTPRequestHandler):
    requests: Counter
    delay: float

    def do_GET(self):
        self.requests[self.path] += 1
        time.sleep(self.delay)  # lets concurrent clients overlap
        super().do_GET()

    def log_message(self, *args):
        pass


class Server:
    def __init__(self, root, url, requests, handler):
        self.root, self.url, self.requests, self._handler = root, url, requests, handler

    def set_delay(self, seconds: float) -> None:
        self._handler.delay = seconds


@pytest.fixture
def http_server(tmp_path):
    """Serve ``tmp_path/www``; ``.requests`` counts GETs per path."""
    root = tmp_path / "www"
    root.mkdir()
    handler_class = type("Handler", (_Handler,), {"requests": Counter(), "delay": 0.0})
    handler = functools.partial(handler_class, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    # shutdown() waits for serve_forever's next poll: 0.5 s by default, at every test's teardown
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield Server(root, f"http://127.0.0.1:{server.server_address[1]}", handler_class.requests, handler_class)
    server.shutdown()
    server.server_close()


@pytest.fixture
def http_root(http_server):
    """(served folder, base url)."""
    return http_server.root, http_server.url
