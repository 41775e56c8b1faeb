"""Errors a user can act on: each names the file (or config key) and the problem."""

from __future__ import annotations

from pathlib import Path


class LesionLocatorError(Exception):
    """Base class of every error the pipeline raises on purpose."""


class InputError(LesionLocatorError):
    """A bad input file: the message starts with the file's path, then says what is wrong."""

    def __init__(self, path: str | Path, problem: str):
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}")


class ConfigError(LesionLocatorError):
    """A bad configuration: the message names each offending key path and its problem."""
