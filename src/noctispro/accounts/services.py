"""Writes for users and facilities, used by the CLI, the admin and start-up."""

from __future__ import annotations

import secrets
from collections.abc import Iterable

from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.db import transaction

from noctispro.accounts.facilities import forget_cached_facilities
from noctispro.accounts.models import Facility, FacilityAETitle, RemoteNode, Role, User
from noctispro.conf import Settings, read_or_create_secret


def add_facility(code: str, name: str, ae_titles: Iterable[str] = ()) -> Facility:
    with transaction.atomic():
        facility = Facility(code=code, name=name)
        facility.full_clean()
        facility.save()
        for ae in ae_titles:
            node = RemoteNode.objects.filter(ae_title=ae.strip()).exclude(facility=None).first()
            if node is not None:
                raise ValidationError(
                    f"AE title {ae.strip()!r} is node {node.name!r} of facility "
                    f"{node.facility.code if node.facility else ''}"
                )
            mapping = FacilityAETitle(facility=facility, ae_title=ae.strip())
            mapping.full_clean()
            mapping.save()
    from noctispro.dimse.access import forget

    forget_cached_facilities()
    forget()
    return facility


def add_user(
    username: str,
    *,
    role: str,
    password: str,
    facility_codes: Iterable[str] = (),
    all_facilities: bool = False,
    email: str = "",
) -> User:
    if role not in Role.values:
        raise ValueError(f"unknown role {role!r}; choose from {', '.join(Role.values)}")
    codes = list(facility_codes)
    facilities = list(Facility.objects.filter(code__in=codes))
    missing = set(codes) - {f.code for f in facilities}
    if missing:
        raise ValueError(f"no such facility: {', '.join(sorted(missing))}")
    user = User(username=username, role=role, all_facilities=all_facilities, email=email)
    validate_password(password, user)
    with transaction.atomic():
        user.is_staff = role == Role.ADMIN
        user.is_superuser = role == Role.ADMIN
        user.set_password(password)
        user.full_clean(exclude=["password"])
        user.save()
        user.facilities.set(facilities)
    return user


def generate_password() -> str:
    return secrets.token_urlsafe(15)


def ensure_admin(settings: Settings) -> str | None:
    """Create the first user `admin` if there is no user at all.

    Its password is NOCTISPRO_ADMIN_PASSWORD, or a random one stored 0600 in the
    secrets dir. Returns the password when it was generated now, so start-up can
    print it once; None otherwise.
    """
    if User.objects.exists():
        return None
    generated = None
    password = settings.admin_password
    if not password:
        path = settings.secrets_dir / "admin_password"
        existed = path.exists()
        password = read_or_create_secret(path, generate_password)
        if not existed:
            generated = password
    user = User(username="admin", role=Role.ADMIN, is_staff=True, is_superuser=True)
    user.set_password(password)
    user.save()
    return generated
