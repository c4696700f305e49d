"""NoctisPro PACS."""

__version__ = "0.1.0"

# DICOM implementation identity written into the file meta of every stored instance
# (PS3.10 7.1): a UID under the pydicom-registered prefix would be wrong, so this is a
# UUID-derived UID (PS3.5 B.2) fixed for the product.
IMPLEMENTATION_CLASS_UID = "2.25.16618904580167478444180659382348651334"
IMPLEMENTATION_VERSION_NAME = f"NOCTISPRO_{__version__.replace('.', '')}"[:16]
