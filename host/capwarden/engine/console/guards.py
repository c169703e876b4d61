"""The console's checks on each request, and what every answer carries (web.py applies them).

In order: the Host header (plain HTTP is loopback only, so only a loopback name with the
console's port is answered: a DNS-rebound name such as evil.example resolved to 127.0.0.1 gets
421; over TLS the certificate binds the name); on every POST, an Origin equal to the console's
own origin, `Sec-Fetch-Site` (when sent) same-origin, and a JSON body (an HTML form cannot send
one, and a cross-origin script cannot without a CORS preflight, which the console never
answers) of at most MAX_BODY bytes. The session cookie and the CSRF token are web.py's (they
need the sessions). Every answer carries a strict Content-Security-Policy (scripts, styles and
connections from this origin only, no inline script, no framing), no-store caching and
nosniff, and HSTS over TLS.
"""

import json

MAX_BODY = 16 * 1024
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")

HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
                               "img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}


class Refused(Exception):
    """A request answered with `status` and {"error": message[, "code": S2 code]}."""

    def __init__(self, status, message, headers=None, code=None):
        super().__init__(message)
        self.status, self.message, self.headers, self.code = status, message, headers or {}, code

    def body(self):
        return {"error": self.message} if self.code is None else {"error": self.message, "code": self.code}


class Guard:
    def __init__(self):
        self.tls = False
        self.hosts = set()

    def serving(self, host, port, tls):
        """Where the console is reachable: the Host values it answers on plain HTTP."""
        self.tls = tls
        names = set(LOOPBACK_NAMES) | {"[%s]" % host if ":" in host else host}
        self.hosts = {"%s:%d" % (n, port) for n in names}
        if not tls and port == 80:
            self.hosts |= names

    def origin(self, request):
        return "%s://%s" % ("https" if self.tls else "http", request.headers.get("host", ""))

    def check_host(self, request):
        """Raises Refused(421) for a Host this console does not answer on."""
        if not self.tls and request.headers.get("host", "") not in self.hosts:
            raise Refused(421, "this console answers only at its own loopback address")

    def check_post(self, request):
        """Raises Refused (403 cross-origin, 415 not JSON)."""
        origin = request.headers.get("origin")
        if origin != self.origin(request):
            raise Refused(403, "cross-origin request refused (Origin %s)" % ("missing" if origin is None else "mismatch"))
        site = request.headers.get("sec-fetch-site")
        if site is not None and site != "same-origin":
            raise Refused(403, "cross-site request refused")
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype != "application/json":
            raise Refused(415, "send JSON (Content-Type: application/json)")

    @staticmethod
    async def body(request):
        """The JSON object of the request body. Raises Refused (413 too large, 400 not an object)."""
        declared = request.headers.get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > MAX_BODY):
            raise Refused(413, "request body too large")
        data = b""
        async for chunk in request.stream():
            data += chunk
            if len(data) > MAX_BODY:
                raise Refused(413, "request body too large")
        try:
            body = json.loads(data)
        except (ValueError, RecursionError):
            raise Refused(400, "the body is not JSON") from None
        if not isinstance(body, dict):
            raise Refused(400, "the body is a JSON object")
        return body

    @property
    def cookie_name(self):
        # __Host-: only ever set over HTTPS, for this host, path / (no subdomain can plant it).
        return "__Host-cw_session" if self.tls else "cw_session"

    def set_cookie(self, response, sid):
        response.set_cookie(self.cookie_name, sid, path="/", secure=self.tls, httponly=True, samesite="strict")

    def clear_cookie(self, response):
        response.set_cookie(self.cookie_name, "", max_age=0, path="/", secure=self.tls, httponly=True,
                            samesite="strict")

    def respond(self, response):
        """`response` with the headers every answer carries."""
        response.headers.update(HEADERS)
        if self.tls:
            response.headers["Strict-Transport-Security"] = "max-age=31536000"
        return response
