"""Domain errors. The core raises these; the CLI and the API map them once each."""


class TwinError(Exception):
    """Base of every error the one map reports to a person or a client."""


class SetupError(TwinError):
    """The machine lacks something the one map needs (PostgreSQL, PostGIS, a folder)."""


class DatabaseUnavailable(TwinError):
    """The configured data base cannot be reached or used."""


class NotFound(TwinError):
    """A thing asked for by name or id does not exist."""


class InvalidInput(TwinError):
    """Input that cannot be used as given; the message says what and where."""


class Conflict(TwinError):
    """The change would break what other data depends on; the message says what."""
