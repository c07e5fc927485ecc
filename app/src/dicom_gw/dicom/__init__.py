"""DICOM networking: the receiver (SCP), the sender (SCU), the file store, TLS and AE policy.

Nothing here imports the API; services and workers use these modules, never the other way round.
"""
