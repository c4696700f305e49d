"""Single rendered images and thumbnails of an instance, served without FastAPI's routing.

A viewer asks for one rendered frame at a time, as fast as the user scrolls; once the
image is in the encoded-image cache, FastAPI's route matching over every route of the
API, its dependency resolution and a second thread-pool hop were most of the time a
request took (about 2 of 3 ms here). This ASGI middleware recognises the four
single-image URLs (PS3.18 10.4.1.1.3 instance and single-frame rendered, 10.4.4
instance and frame thumbnail) with a bearer token, and calls the very endpoint
functions of `dicomweb.rendered` with the caller `api.deps.get_caller` makes of the
token: the same authentication, facility scoping, parameters, caching and response.

Anything else — another URL, a session cookie instead of a token, a list of frames,
and every error (401, 404, 406, 4xx from the parameters or the pixel data) — goes on to
FastAPI unchanged, which then answers it (so errors look the same whichever way).
"""

from __future__ import annotations

import re

from django.db import close_old_connections
from fastapi import HTTPException, Request, Response
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Receive, Scope, Send

from noctispro.api.deps import get_caller
from noctispro.dicomweb import rendered

_UID = r"[0-9]{1,64}(?:\.[0-9]{1,64}){0,63}"  # PS3.5 9.1: digits and dots
SINGLE_IMAGE = re.compile(
    rf"/dicom-web/studies/(?P<study>{_UID})/series/(?P<series>{_UID})"
    rf"/instances/(?P<sop>{_UID})(?:/frames/(?P<frame>[0-9]{{1,6}}))?"
    r"/(?P<kind>rendered|thumbnail)"
)


def _bearer(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            return token.strip() or None if scheme.lower() == "bearer" else None
    return None


def _serve(request: Request, token: str, match: re.Match[str]) -> Response | None:
    """The endpoint's response, or None to let FastAPI answer (errors included)."""
    try:
        caller = get_caller(request, token)  # which starts with Django's connection upkeep
        study, series, sop = match["study"], match["series"], match["sop"]
        frame, kind = match["frame"], match["kind"]
        if kind == "rendered":
            if frame is None:
                return rendered.instance_rendered(study, series, sop, request, caller)
            return rendered.frames_rendered(study, series, sop, frame, request, caller)
        if frame is None:
            return rendered.instance_thumbnail(study, series, sop, request, caller)
        return rendered.frame_thumbnail(study, series, sop, frame, request, caller)
    except HTTPException:
        return None
    finally:
        close_old_connections()


class SingleImageShortcut:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "GET":
            match = SINGLE_IMAGE.fullmatch(scope["path"])
            token = _bearer(scope) if match else None
            if match and token:
                response = await run_in_threadpool(_serve, Request(scope, receive), token, match)
                if response is not None:
                    await response(scope, receive, send)
                    return
        await self.app(scope, receive, send)
