"""Error types for file input/output (ValueError subclasses: the CLI prints them as one line)."""

from __future__ import annotations


class ImageReadError(ValueError):
    """A file that cannot be read as an image or label map; the message names the file."""


class OutputExistsError(ValueError):
    """An output file exists already and ``overwrite`` was not given."""
