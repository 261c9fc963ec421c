"""The one error the CLI shows as a single line: what could not be done, and why."""

from __future__ import annotations


class Refused(Exception):
    """Bad input or an unreachable part: the command cannot do what it was asked."""
