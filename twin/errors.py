"""Domain errors. The core raises these; the CLI and the API map them once each."""

from __future__ import annotations

from typing import Any


class TwinError(Exception):
    """Base of every error the one map reports to a person or a client."""


class SetupError(TwinError):
    """The machine lacks something the one map needs (PostgreSQL, PostGIS, a folder)."""


class DatabaseUnavailable(TwinError):
    """The configured data base cannot be reached or used."""


class NotFound(TwinError):
    """A thing asked for by name or id does not exist."""


class InvalidInput(TwinError):
    """Input that cannot be used as given; the message says what and where.

    ``option`` names the input that was wrong when a person gave it ("crs", "layer",
    "dataset", "mapping", "values", "defaults" …, as ImportOptions calls them): the
    message says what is wrong in neutral words, and each door adds its own hint (the
    CLI its flag, the API its parameter)."""

    def __init__(self, message: str, *, option: str | None = None) -> None:
        super().__init__(message)
        self.option = option


class NothingStored(TwinError):
    """An import that stored no feature at all (the file held none, or none could be
    stored): an error, and nothing of it is kept. ``report`` is what the import did (an
    ImportReport: what was read, and each rejection and why)."""

    def __init__(self, message: str, report: Any) -> None:
        super().__init__(message)
        self.report = report


class Conflict(TwinError):
    """The change would break what other data depends on; the message says what."""


class StaleVersion(Conflict):
    """A write against a version of a thing that is no longer its version: someone else
    changed it since it was read (a Conflict; over HTTP 412 when the version came as
    If-Match)."""


class Forbidden(TwinError):
    """The caller is known but their role or scope does not allow this; the message says
    what the role may not do."""


class TooLarge(TwinError):
    """Input over its limit (a request body, an upload, a photo's bytes or pixels): over
    HTTP 413 Content Too Large; the message says the limit."""


class UnsupportedMedia(TwinError):
    """A file of a kind that is not taken here (a GIF where a JPEG, PNG or WebP photo is
    asked for): over HTTP 415; the message says the kind found, by its content."""
