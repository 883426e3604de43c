"""The chat example's web server: the page, and a token endpoint.

POST /token with {"name": "alice"} answers {"token": JWT}: an HS256 token
signed with the secret Herald was started with (--jwt-hmac-secret), with
sub = the nickname, info = {"name": nickname}, and subscribe/publish =
["chat:*"]. A real application would first check who is asking (a session
cookie, a login); this demo trusts any nickname.

The secret comes from the CHAT_JWT_SECRET environment variable, so that it
does not show in the process list. Everything else (static files,
/config.json, /client/herald.js) is examples/common/webserver.py.
"""

import base64
import hashlib
import hmac
import json
import os
import re
import sys
import time
from http import HTTPStatus

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "common"))
import webserver  # noqa: E402

SECRET = os.environ.get("CHAT_JWT_SECRET", "")
TOKEN_TTL = 3600  # seconds; the client asks for a new token before it runs out
NICKNAME = re.compile(r"^[A-Za-z0-9_.-]{1,24}$")


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def make_token(claims: dict, secret: str) -> str:
    """An HS256 JWT (RFC 7519) with the standard library."""
    head = b64url(json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode())
    body = b64url(json.dumps(claims, separators=(",", ":")).encode())
    sig = hmac.new(secret.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64url(sig)}"


class ChatHandler(webserver.Handler):
    def do_POST(self):
        if self.path.split("?", 1)[0] != "/token":
            self.send_json(HTTPStatus.NOT_FOUND, {"error": "not found"})
            return
        try:
            length = int(self.headers.get("Content-Length") or 0)
            name = json.loads(self.rfile.read(min(length, 4096)) or b"{}").get("name", "")
        except (ValueError, AttributeError):
            name = ""
        name = name.strip() if isinstance(name, str) else ""
        if not NICKNAME.match(name):
            self.send_json(HTTPStatus.BAD_REQUEST,
                           {"error": "a nickname is 1 to 24 letters, digits, '.', '_' or '-'"})
            return
        now = int(time.time())
        token = make_token({
            "sub": name,
            "info": {"name": name},
            "subscribe": ["chat:*"],
            "publish": ["chat:*"],
            "iat": now,
            "exp": now + TOKEN_TTL,
        }, SECRET)
        self.send_json(HTTPStatus.OK, {"token": token})


if __name__ == "__main__":
    if not SECRET:
        sys.exit("set CHAT_JWT_SECRET to the secret given to Herald with --jwt-hmac-secret")
    webserver.serve(webserver.parse_args("The chat example's web server and token endpoint."), ChatHandler)
