"""Passwords, rate limiting and bearer tokens, shared by the web and api services.

Tokens are JWTs signed with HS256 only (PyJWT is told the one algorithm, so `alg: none`
and algorithm confusion are refused) and must carry exp, iat, aud and iss.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import jwt
from django.contrib.auth import authenticate
from django.db.models import Q
from django.utils import timezone

from noctispro.accounts.models import AuthFailure, User
from noctispro.conf import get_settings

ALGORITHM = "HS256"
_USER_BY_ID = "SELECT * FROM accounts_user WHERE id = %s"
AUDIENCE = "noctispro-api"
ISSUER = "noctispro"


class LoginThrottled(Exception):
    def __init__(self, retry_after: int) -> None:
        super().__init__(f"too many failed logins; try again in {retry_after} s")
        self.retry_after = retry_after


class InvalidToken(Exception):
    pass


@dataclass(frozen=True)
class IssuedToken:
    access_token: str
    expires_in: int


def check_throttle(username: str, client_ip: str | None) -> None:
    """Refuse further attempts after too many recent failures for a name or an address."""
    s = get_settings()
    since = timezone.now() - timedelta(seconds=s.login_failure_window_seconds)
    recent = AuthFailure.objects.filter(at__gte=since)
    by_name = recent.filter(username=username.lower()).count()
    by_ip = recent.filter(client_ip=client_ip).count() if client_ip else 0
    if by_name >= s.login_max_failures or by_ip >= 4 * s.login_max_failures:
        oldest = (
            recent.filter(Q(username=username.lower()) | Q(client_ip=client_ip))
            .order_by("at")
            .values_list("at", flat=True)
            .first()
        )
        wait = s.login_failure_window_seconds
        if oldest is not None:
            wait = max(1, int((oldest - since).total_seconds()))
        raise LoginThrottled(wait)


def record_failure(username: str, client_ip: str | None) -> None:
    AuthFailure.objects.create(username=username.lower()[:150], client_ip=client_ip)


def clear_failures(username: str) -> None:
    AuthFailure.objects.filter(username=username.lower()).delete()


def login(username: str, password: str, client_ip: str | None) -> User | None:
    """Check a password with the throttle applied; None when it is wrong."""
    check_throttle(username, client_ip)
    user = authenticate(username=username, password=password)
    if user is None or not user.is_active:
        record_failure(username, client_ip)
        return None
    clear_failures(username)
    assert isinstance(user, User)
    return user


def issue_token(user: User) -> IssuedToken:
    s = get_settings()
    now = timezone.now()
    payload = {
        "sub": str(user.pk),
        "name": user.username,
        "iat": int(now.timestamp()),
        "exp": int((now + timedelta(seconds=s.token_ttl_seconds)).timestamp()),
        "aud": AUDIENCE,
        "iss": ISSUER,
        "jti": uuid.uuid4().hex,
        "pwd": _password_stamp(user),
    }
    token = jwt.encode(payload, s.effective_secret_key(), algorithm=ALGORITHM)
    return IssuedToken(access_token=token, expires_in=s.token_ttl_seconds)


#: Claims of tokens whose signature and claims checked out, by token. A token's
#: signature never changes, so only its expiry is checked again on a hit; the user it
#: names is read from the database on every request. Bounded: cleared when full.
_verified: dict[str, dict[str, Any]] = {}
_VERIFIED_MAX = 4096


def _claims(token: str) -> dict[str, Any]:
    claims = _verified.get(token)
    if claims is not None:
        if claims["exp"] > time.time():
            return claims
        _verified.pop(token, None)
        raise InvalidToken("token has expired")
    s = get_settings()
    try:
        claims = jwt.decode(
            token,
            s.effective_secret_key(),
            algorithms=[ALGORITHM],
            audience=AUDIENCE,
            issuer=ISSUER,
            options={"require": ["exp", "iat", "aud", "iss", "sub"]},
        )
    except jwt.ExpiredSignatureError as exc:
        raise InvalidToken("token has expired") from exc
    except jwt.PyJWTError as exc:
        raise InvalidToken("token is not valid") from exc
    assert claims is not None
    if len(_verified) >= _VERIFIED_MAX:
        _verified.clear()
    _verified[token] = claims
    return claims


def user_for_token(token: str) -> User:
    claims = _claims(token)
    try:
        # raw(): the ORM would spend ~0.15 ms compiling this one-row lookup, per request.
        rows = list(User.objects.raw(_USER_BY_ID, [int(claims["sub"])]))
    except ValueError as exc:
        raise InvalidToken("token names no user") from exc
    if not rows:
        raise InvalidToken("token names no user")
    user = rows[0]
    if not user.is_active:
        raise InvalidToken("user is disabled")
    # A token issued before the password changed is no longer good.
    if claims.get("pwd") != _password_stamp(user):
        raise InvalidToken("token was issued before the password changed")
    return user


def _password_stamp(user: User) -> str:
    return user.get_session_auth_hash()[:16]
