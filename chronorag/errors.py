"""Errors whose message is written for the user (a model that is not there, a store that cannot be
opened, a generation backend that is down): the CLI prints them as one line and the service
returns them as they are, while any other exception is a bug whose text stays in the log. The
subpackages raise subclasses of these, so a shell recognises them without importing a subpackage."""

from __future__ import annotations


class UserFacingError(RuntimeError):
    """Something outside the code went wrong; the message says what and what to do."""
