"""Which requests `dicomweb.shortcut` answers itself and which go on to FastAPI.

That the answers are right (authentication, facility scoping, parameters, caching) is
tested over HTTP: tests/integration/test_facilities.py and test_dicomweb_rendered.py.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from fastapi import Response

from noctispro.dicomweb import shortcut

BASE = "/dicom-web/studies/1.2.3/series/1.2.3.4/instances/1.2.3.4.5"


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        (f"{BASE}/rendered", ("rendered", None)),
        (f"{BASE}/frames/7/rendered", ("rendered", "7")),
        (f"{BASE}/thumbnail", ("thumbnail", None)),
        (f"{BASE}/frames/1/thumbnail", ("thumbnail", "1")),
        (f"{BASE}/frames/1,2/rendered", None),  # a list: multipart, FastAPI's
        (f"{BASE}/frames/1/rendered/extra", None),
        (f"{BASE}/metadata", None),
        ("/dicom-web/studies/1.2.3/series/1.2.3.4/rendered", None),
        ("/dicom-web/studies/1.2.3/rendered", None),
        ("/dicom-web/studies/1.2.x/series/1.2.3.4/instances/1.2.3.4.5/rendered", None),
        ("/dicom-web/studies/../series/1.2.3.4/instances/1.2.3.4.5/rendered", None),
    ],
)
def test_single_image_urls(path: str, expected: tuple[str, str | None] | None) -> None:
    match = shortcut.SINGLE_IMAGE.fullmatch(path)
    assert (None if match is None else (match["kind"], match["frame"])) == expected


def _scope(path: str, headers: dict[str, str], method: str = "GET") -> dict[str, Any]:
    return {
        "type": "http",
        "method": method,
        "path": path,
        "query_string": b"",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
    }


def _call(scope: dict[str, Any], served: Response | None) -> tuple[list[str], list[dict]]:
    """Run the middleware over `scope`; `_serve` answers `served`. Returns who answered."""
    calls: list[str] = []
    sent: list[dict] = []

    async def downstream(scope: Any, receive: Any, send: Any) -> None:
        calls.append("fastapi")

    async def receive() -> dict:
        return {"type": "http.request", "body": b""}

    async def send(message: dict) -> None:
        sent.append(message)

    def fake_serve(request: Any, token: str, match: Any) -> Response | None:
        calls.append(f"shortcut:{token}")
        return served

    original = shortcut._serve
    shortcut._serve = fake_serve  # type: ignore[assignment]
    try:
        asyncio.run(shortcut.SingleImageShortcut(downstream)(scope, receive, send))
    finally:
        shortcut._serve = original  # type: ignore[assignment]
    return calls, sent


def test_a_bearer_request_for_a_single_image_is_answered_here() -> None:
    calls, sent = _call(
        _scope(f"{BASE}/frames/1/rendered", {"Authorization": "Bearer abc"}),
        Response(b"jpeg", media_type="image/jpeg"),
    )
    assert calls == ["shortcut:abc"]
    assert sent[0]["status"] == 200 and sent[1]["body"] == b"jpeg"


@pytest.mark.parametrize(
    ("path", "headers", "method"),
    [
        (f"{BASE}/rendered", {}, "GET"),  # no credentials: FastAPI's 401
        (f"{BASE}/rendered", {"Cookie": "sessionid=x"}, "GET"),  # the session path
        (f"{BASE}/rendered", {"Authorization": "Basic YTpi"}, "GET"),
        (f"{BASE}/rendered", {"Authorization": "Bearer abc"}, "POST"),
        (f"{BASE}/metadata", {"Authorization": "Bearer abc"}, "GET"),
    ],
)
def test_everything_else_goes_to_fastapi(path: str, headers: dict[str, str], method: str) -> None:
    calls, _ = _call(_scope(path, headers, method), Response(b"never"))
    assert calls == ["fastapi"]


def test_an_error_is_left_to_fastapi() -> None:
    """`_serve` gives up (None) on any HTTPException: FastAPI answers, the usual way."""
    calls, sent = _call(_scope(f"{BASE}/rendered", {"Authorization": "Bearer abc"}), None)
    assert calls == ["shortcut:abc", "fastapi"]
    assert sent == []
