"""A tiny web server for the examples' pages (Python standard library only).

It serves the files of one folder, plus two routes:

  /config.json        {"herald": "http://HOST:PORT"}: where the page finds Herald
  /client/herald.js   Herald's own /client/herald.js, passed through unchanged

The pass-through is there because the page and Herald have different origins
(another port), and a browser loads a module script from another origin only
when the response carries CORS headers, which Herald's /client/herald.js does
not send. The WebSocket itself goes straight to Herald, which accepts this
page's origin because the run script starts it with --allowed-origins.

Run as a script, or subclass Handler to add routes (the chat example adds its
token endpoint that way).
"""

import argparse
import json
import os
import sys
import urllib.request
from functools import partial
from http import HTTPStatus
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer


class Handler(SimpleHTTPRequestHandler):
    """Static files from `directory`, /config.json and the client pass-through."""

    herald = "http://127.0.0.1:8080"
    static = False

    def do_GET(self):
        path = self.path.split("?", 1)[0]
        if path == "/config.json":
            self.send_json(HTTPStatus.OK, {"herald": self.herald})
        elif path == "/client/herald.js":
            self.proxy_client()
        else:
            self.static = True
            super().do_GET()

    def proxy_client(self):
        try:
            with urllib.request.urlopen(self.herald + "/client/herald.js", timeout=5) as res:
                body = res.read()
        except OSError as err:
            self.send_error(HTTPStatus.BAD_GATEWAY, f"Herald at {self.herald} did not answer: {err}")
            return
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", "text/javascript; charset=utf-8")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def send_json(self, status, value):
        body = json.dumps(value).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Cache-Control", "no-store")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def end_headers(self):
        # The pages change while one works on them: never serve a stale one.
        if self.static:
            self.send_header("Cache-Control", "no-cache")
        super().end_headers()

    def log_message(self, format, *args):
        # Quiet: only errors (4xx, 5xx) are worth a line in the run script's output.
        if len(args) >= 2 and str(args[1])[:1] in "45":
            sys.stderr.write("web: %s\n" % (format % args))


def parse_args(description):
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--dir", required=True, help="folder of the page's files")
    ap.add_argument("--port", type=int, default=8000, help="port to serve on (0: any free one)")
    ap.add_argument("--bind", default="127.0.0.1", help="address to serve on")
    ap.add_argument("--herald", default="http://127.0.0.1:8080", help="Herald's HTTP base URL")
    return ap.parse_args()


def serve(args, handler=Handler):
    handler.herald = args.herald.rstrip("/")
    server = ThreadingHTTPServer((args.bind, args.port), partial(handler, directory=os.path.abspath(args.dir)))
    host, port = server.server_address[:2]
    print(f"web: serving {args.dir} on http://{host}:{port}/", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    serve(parse_args("Serve an example's page, its config and Herald's browser client."))
