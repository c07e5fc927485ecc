"""dicom-gw: a DICOM gateway that keeps every byte it receives and forwards it where rules say."""

__version__ = "0.1.0"
