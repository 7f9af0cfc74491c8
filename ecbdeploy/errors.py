"""The one exception type for problems a user can fix (bad input, failed check)."""


class EcbDeployError(Exception):
    """An error the CLI prints as one line (no traceback) before exiting non-zero."""
