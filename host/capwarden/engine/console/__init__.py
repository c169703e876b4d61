"""The operator console (issue 15 item 6): a web page served by the engine, at
`capwarden serve --console HOST:PORT` (docs/console.md).

    server.py    the HTTP server (uvicorn inside the engine's loop) and its TLS-unless-loopback rule
    web.py       the Starlette app: pages, JSON API, live stream
    guards.py    the checks on each request (Host, Origin, JSON body) and the headers of every answer
    logins.py    operator sessions, CSRF tokens, the brake on failed logins
    sources.py   the engine side: control room, pending decisions, operator accounts, audit
    audittail.py the audit log's tail and its hash chain, followed incrementally
    static/      the pages (plain HTML, CSS and JavaScript; package data, no build step)
"""
