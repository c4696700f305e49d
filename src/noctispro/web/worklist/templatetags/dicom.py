"""Template filters that show DICOM values the way people read them."""

from __future__ import annotations

from django import template

register = template.Library()


@register.filter
def da(value: str) -> str:
    """DA `YYYYMMDD` → `YYYY-MM-DD` (PS3.5 6.2); anything else as it is."""
    v = (value or "").strip()
    if len(v) == 8 and v.isdigit():
        return f"{v[:4]}-{v[4:6]}-{v[6:]}"
    return v


@register.filter
def tm(value: str) -> str:
    """TM `HHMMSS.frac` → `HH:MM:SS`; shorter forms as far as they go."""
    v = (value or "").strip().split(".")[0]
    if not v.isdigit():
        return value or ""
    return ":".join(v[i : i + 2] for i in range(0, min(len(v), 6), 2))
