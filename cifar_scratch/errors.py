"""Errors that the CLI turns into one clear line and an exit code, never a traceback."""


class UserError(Exception):
    """Something the user can fix (bad input, missing file). ``exit_code`` is what the CLI returns."""

    exit_code = 1


class ConfigError(UserError):
    """Invalid configuration. ``lines`` holds one ``dotted.path: message`` line per problem."""

    exit_code = 2

    def __init__(self, lines: list[str] | str):
        self.lines = [lines] if isinstance(lines, str) else list(lines)
        super().__init__("\n".join(self.lines))


class DataError(UserError):
    """A dataset could not be found, downloaded, verified or parsed."""


class DataUnavailable(DataError):
    """A data source that is not there: a missing path, or an official file that cannot be downloaded
    (no network, or downloads off). The next of ``data.source``'s candidates may stand in for it;
    data that is there but wrong (a checksum mismatch) is a plain DataError and stops the run."""


class CheckpointError(UserError):
    """A checkpoint or run folder is missing, incomplete or of an unknown format."""


class UsageError(UserError):
    """A command used the wrong way (missing argument, a run that is already finished)."""

    exit_code = 2


class TrainingFailed(UserError):
    """Training ran but did not produce a usable model (the loss became NaN or infinite)."""
