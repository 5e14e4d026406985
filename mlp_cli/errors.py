"""The one exception family the CLI turns into a one-line message and a non-zero exit."""


class MlpError(Exception):
    """A problem the user can fix: bad flags, missing data, a broken checkpoint."""

    exit_code = 1
    prefix = "error: "  # how the CLI's one line starts
    # under torchrun: raised alike by every process (they decided together), so rank 0 alone reports it
    same_on_every_rank = False


class ConfigError(MlpError):
    """A setting in a TOML file or on the command line is unknown, mistyped or out of range."""

    same_on_every_rank = True  # every process reads the same flags and files


class DataError(MlpError):
    """The data set cannot be found, read or trusted."""


class CheckpointError(MlpError):
    """A checkpoint cannot be found, read or trusted."""


class TrainingStoppedError(MlpError):
    """Training stopped early on purpose (a signal) and saved where to resume; exit_code follows the signal."""

    same_on_every_rank = True  # the ranks agree to stop, after the same batch
    prefix = ""  # not a failure: the message itself says "stopped in epoch ..." and how to resume

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


class TrainingDivergedError(MlpError):
    """The loss became NaN or infinite; nothing was saved after the last good epoch."""

    same_on_every_rank = True  # found in the loss summed over the ranks


def first_line(err: BaseException) -> str:
    """err's message as a one-line error quotes it: its first line, or its type when it has no message."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def os_reason(err: BaseException) -> str:
    """The operating system's reason behind err (e.g. "No space left on device"), else its first line.

    Libraries often fail with their own exception while the OSError that caused it is being handled (torch's
    zip writer on a full disk: "unexpected pos ..."); the cause is what the user can act on.
    """
    cause: BaseException | None = err
    while cause is not None:
        if isinstance(cause, OSError):
            return cause.strerror or first_line(cause)
        cause = cause.__cause__ or cause.__context__
    return first_line(err)
