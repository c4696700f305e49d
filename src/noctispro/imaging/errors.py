"""Why an image could not be decoded or rendered.

Every failure of the imaging package is an `ImagingError` with a message a person can
act on. Adapters map the subclasses to their protocol (see docs/imaging.md): HTTP 4xx
for input the client or the sender got wrong, never a 5xx or a crash.
"""

from __future__ import annotations


class ImagingError(ValueError):
    """Base of every imaging failure; `message` says what is wrong with the input."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NoPixelData(ImagingError):
    """The instance has no Pixel Data: not an image (an SR, a KO, a presentation state)."""


class UnsupportedImage(ImagingError):
    """A transfer syntax, photometric interpretation or pixel layout we cannot decode."""


class CorruptPixelData(ImagingError):
    """The pixel data contradicts its own description (short, malformed, undecodable)."""


class PixelDataTooLarge(ImagingError):
    """Decoding would need more memory than the configured cap: a decompression bomb."""


class FrameOutOfRange(ImagingError):
    """The requested frame index is not in the instance."""


class UnsupportedTransferSyntax(ImagingError):
    """Transcoding to this transfer syntax is not offered (HTTP 406 for WADO-RS)."""


class InvalidRenderParameter(ImagingError):
    """A window, viewport or quality that cannot be honoured."""
