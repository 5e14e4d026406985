"""The one exception family the CLI turns into a one-line message and a non-zero exit."""


class MlpError(Exception):
    """A problem the user can fix: bad flags, missing data, a broken checkpoint."""


class ConfigError(MlpError):
    """A setting in a TOML file or on the command line is unknown, mistyped or out of range."""


class DataError(MlpError):
    """The data set cannot be found, read or trusted."""


class CheckpointError(MlpError):
    """A checkpoint cannot be found, read or trusted."""
