"""Imaging failures as HTTP statuses (docs/imaging.md, Errors): always a 4xx, never a 5xx."""

from __future__ import annotations

from fastapi import HTTPException, status

from noctispro.imaging.errors import (
    CorruptPixelData,
    FrameOutOfRange,
    ImagingError,
    InvalidRenderParameter,
    NoPixelData,
    PixelDataTooLarge,
    UnsupportedImage,
    UnsupportedTransferSyntax,
)


def http_error(exc: ImagingError, *, rendered: bool = False) -> HTTPException:
    """An imaging failure as the 4xx it is (docs/imaging.md, Errors); never a 5xx."""
    code = status.HTTP_422_UNPROCESSABLE_ENTITY
    if isinstance(exc, NoPixelData):
        # A rendered image of a non-image object cannot be produced in any image type
        # (PS3.18 8.7.4: 406); its frames are resources that do not exist (404).
        code = status.HTTP_406_NOT_ACCEPTABLE if rendered else status.HTTP_404_NOT_FOUND
    elif isinstance(exc, FrameOutOfRange):
        code = status.HTTP_404_NOT_FOUND
    elif isinstance(exc, InvalidRenderParameter):
        code = status.HTTP_400_BAD_REQUEST
    elif isinstance(exc, UnsupportedTransferSyntax):
        code = status.HTTP_406_NOT_ACCEPTABLE
    elif isinstance(exc, UnsupportedImage | CorruptPixelData | PixelDataTooLarge):
        code = status.HTTP_422_UNPROCESSABLE_ENTITY
    return HTTPException(code, exc.message)
