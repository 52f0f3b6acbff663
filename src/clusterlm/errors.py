"""The project's exception hierarchy.

Every error a user can cause (bad path, bad config, bad checkpoint) is a
`ClusterLMError` subclass with a message that says what to change. The CLI turns
these into one line on stderr, `error: <message>`, and exits with `exit_code`:
2 for usage/config/input errors, 1 for runtime failures.
"""

from __future__ import annotations


class ClusterLMError(Exception):
    """Base class: a failure with a message meant for the user."""

    exit_code = 2


class UsageError(ClusterLMError):
    """Bad command-line usage (missing argument, conflicting flags)."""


class ConfigError(ClusterLMError):
    """Invalid configuration: unknown key, wrong type, impossible value."""


class DataError(ClusterLMError):
    """Missing, incomplete or corrupt input data / dataset directory."""


class CheckpointError(ClusterLMError):
    """Missing, corrupt or incompatible checkpoint."""


class OutputExistsError(ClusterLMError):
    """Refusing to overwrite an existing output without --overwrite."""


class TrainingError(ClusterLMError):
    """A run that started but could not continue (e.g. too many non-finite losses)."""

    exit_code = 1


class DistributedError(ClusterLMError):
    """Invalid parallel configuration or a failed distributed setup."""


class RunLockedError(ClusterLMError):
    """Another trainer holds the run dir's lock (`RUN/train.lock`)."""
