"""OAuth2 password flow: a bearer token for the same users as the web pages."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request, status
from fastapi.security import OAuth2PasswordRequestForm

from noctispro.accounts.auth import LoginThrottled, issue_token, login
from noctispro.api.routing import DjangoRoute
from noctispro.api.schemas import Problem, Token

router = APIRouter(prefix="/auth", tags=["auth"], route_class=DjangoRoute)


@router.post(
    "/token",
    response_model=Token,
    responses={401: {"model": Problem}, 429: {"model": Problem}},
    summary="Exchange a user name and password for a bearer token",
)
def token(request: Request, form: Annotated[OAuth2PasswordRequestForm, Depends()]) -> Token:
    client_ip = request.client.host if request.client else None
    try:
        user = login(form.username, form.password, client_ip)
    except LoginThrottled as exc:
        raise HTTPException(
            status.HTTP_429_TOO_MANY_REQUESTS,
            f"too many failed logins; try again in {exc.retry_after} s",
            headers={"Retry-After": str(exc.retry_after)},
        ) from exc
    if user is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "incorrect user name or password",
            headers={"WWW-Authenticate": "Bearer"},
        )
    issued = issue_token(user)
    return Token(access_token=issued.access_token, expires_in=issued.expires_in)
