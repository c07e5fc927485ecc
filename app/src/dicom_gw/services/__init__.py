"""The service layer: validated operations on destinations, rules and the queue.

The CLI and the API both call these functions; the database and DICOM code never call back.
"""


class ServiceError(Exception):
    """A refused operation, naming the field at fault so a user can correct it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class NotFound(ServiceError):
    """The thing named does not exist (the API answers 404)."""
