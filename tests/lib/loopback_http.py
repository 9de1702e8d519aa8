"""A directory served over HTTP on 127.0.0.1, for roles that download releases (test use only)."""

from __future__ import annotations

import http.server
import threading
from pathlib import Path
from typing import Any, List


class Server:
    """http.server on 127.0.0.1 in a thread, counting the GET requests it answered."""

    def __init__(self, directory: Path) -> None:
        self.requests: List[str] = []
        outer = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                super().__init__(*args, directory=str(directory), **kwargs)

            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                outer.requests.append(self.path)
                super().do_GET()

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, name: str) -> str:
        return "http://127.0.0.1:%d/%s" % (self.httpd.server_address[1], name)

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
