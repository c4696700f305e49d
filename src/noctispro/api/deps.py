"""Annotated dependencies shared by the routes (DESIGN §6.11)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from django.conf import settings as django_settings
from django.db import close_old_connections
from fastapi import Depends, HTTPException, Request, status
from fastapi.security import OAuth2PasswordBearer

from noctispro.accounts.auth import InvalidToken, user_for_token
from noctispro.accounts.facilities import FacilityChoiceError, choose_facility
from noctispro.accounts.models import Facility, Role, User
from noctispro.accounts.scoping import Principal, principal_for_user
from noctispro.conf import Settings, get_settings

oauth2_scheme = OAuth2PasswordBearer(tokenUrl="/api/v1/auth/token", auto_error=False)

UNSAFE_METHODS = {"POST", "PUT", "PATCH", "DELETE"}


@dataclass(frozen=True)
class Caller:
    user: User
    principal: Principal


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(
        status_code=status.HTTP_401_UNAUTHORIZED,
        detail=detail,
        headers={"WWW-Authenticate": "Bearer"},
    )


def _user_from_session(request: Request) -> User | None:
    """The user of a Django session cookie (same login as the web pages)."""
    key = request.cookies.get(django_settings.SESSION_COOKIE_NAME)
    if not key:
        return None
    from types import SimpleNamespace

    from django.contrib.auth import get_user
    from django.contrib.sessions.backends.db import SessionStore

    user = get_user(SimpleNamespace(session=SessionStore(session_key=key)))  # type: ignore[arg-type]
    if not isinstance(user, User) or not user.is_active:
        return None
    if request.method in UNSAFE_METHODS:
        # Cookies ride along on cross-site requests; require the CSRF double submit.
        cookie = request.cookies.get(django_settings.CSRF_COOKIE_NAME, "")
        header = request.headers.get("X-CSRFToken", "")
        if not cookie or header != cookie:
            raise HTTPException(status.HTTP_403_FORBIDDEN, "CSRF check failed: send X-CSRFToken")
    return user


def get_caller(request: Request, token: Annotated[str | None, Depends(oauth2_scheme)]) -> Caller:
    close_old_connections()
    if token:
        try:
            user = user_for_token(token)
        except InvalidToken as exc:
            raise _unauthorized(str(exc)) from exc
    else:
        session_user = _user_from_session(request)
        if session_user is None:
            raise _unauthorized("not authenticated: send a bearer token")
        user = session_user
    return Caller(user=user, principal=principal_for_user(user))


CallerDep = Annotated[Caller, Depends(get_caller)]
SettingsDep = Annotated[Settings, Depends(get_settings)]

UPLOAD_ROLES = {Role.ADMIN, Role.TECHNOLOGIST, Role.RADIOLOGIST}


def require_uploader(caller: CallerDep) -> Caller:
    if caller.user.role not in UPLOAD_ROLES:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "your role may not store instances")
    return caller


UploaderDep = Annotated[Caller, Depends(require_uploader)]


def facility_for_write(caller: Caller, code: str | None) -> Facility:
    """The facility new data is filed under: the caller's own, or one they name."""
    try:
        return choose_facility(caller.user, code)
    except FacilityChoiceError as exc:
        code_ = status.HTTP_403_FORBIDDEN if exc.forbidden else status.HTTP_400_BAD_REQUEST
        raise HTTPException(code_, str(exc)) from exc
