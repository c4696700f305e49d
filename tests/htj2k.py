"""High-Throughput JPEG 2000 test files (PS3.5 A.4.11, 8.2.15), made with OpenJPH.

Neither pydicom-data nor DCMTK 3.6.7 has any, so a pydicom test image is encoded with
imagecodecs' HTJ2K encoder (OpenJPH: RPCL progression by default) and wrapped as
encapsulated Pixel Data with pydicom, one new SOP Instance per transfer syntax.
"""

from __future__ import annotations

from pathlib import Path

import imagecodecs
import numpy as np
import pydicom
from pydicom.encaps import encapsulate
from pydicom.uid import generate_uid

from tests.helpers import pydicom_test_file

HTJ2K_LOSSLESS = "1.2.840.10008.1.2.4.201"
HTJ2K_LOSSLESS_RPCL = "1.2.840.10008.1.2.4.202"
HTJ2K = "1.2.840.10008.1.2.4.203"

#: Transfer syntax -> (name, imagecodecs.htj2k_encode options). The RPCL syntax also
#: wants TLM marker segments, so a decoder can find tile-parts without a scan.
HTJ2K_SYNTAXES: dict[str, tuple[str, dict[str, object]]] = {
    HTJ2K_LOSSLESS: ("HTJ2K Lossless", {"reversible": True}),
    HTJ2K_LOSSLESS_RPCL: ("HTJ2K Lossless RPCL", {"reversible": True, "tlm": True}),
    HTJ2K: ("HTJ2K", {"reversible": False, "level": 0.0002}),  # quantization step
}

RPCL = 2  # COD progression order (ISO/IEC 15444-1 Table A.16)


def progression_order(codestream: bytes) -> int:
    """The progression order in the codestream's COD marker segment."""
    cod = codestream.find(b"\xff\x52")
    assert cod > 0, "no COD marker segment"
    return codestream[cod + 5]


def make_htj2k_files(folder: Path) -> dict[str, Path]:
    """One file per HTJ2K transfer syntax, from CT_small.dcm (16-bit signed)."""
    folder.mkdir(parents=True, exist_ok=True)
    source = pydicom.dcmread(pydicom_test_file("CT_small.dcm"))
    pixels = source.pixel_array
    made = {}
    for syntax, (name, options) in HTJ2K_SYNTAXES.items():
        codestream = bytes(imagecodecs.htj2k_encode(pixels, **options))
        assert progression_order(codestream) == RPCL
        decoded = imagecodecs.htj2k_decode(codestream)
        lossless = bool(np.array_equal(decoded, pixels))
        assert lossless == bool(options["reversible"]), name
        ds = pydicom.dcmread(pydicom_test_file("CT_small.dcm"))
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.file_meta.TransferSyntaxUID = syntax
        ds.SeriesDescription = name
        ds.PixelData = encapsulate([codestream])
        ds["PixelData"].VR = "OB"
        ds["PixelData"].is_undefined_length = True
        if not lossless:
            # PS3.3 C.7.6.1.1.5: say that the image was compressed with loss, and how.
            ds.LossyImageCompression = "01"
            ds.LossyImageCompressionRatio = round(pixels.nbytes / len(codestream), 2)
            ds.LossyImageCompressionMethod = "ISO_15444_15"
        path = folder / f"{name.replace(' ', '_')}.dcm"
        ds.save_as(path, enforce_file_format=True)
        made[syntax] = path
    return made
