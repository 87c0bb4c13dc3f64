"""One exception type for every user mistake: the CLI prints its message as one line and exits 2."""


class MedsegError(Exception):
    """A problem with the user's input (file, config key, data) that the user can fix.

    The message must name the file or config key at fault; it is kept on one line (whitespace,
    newlines included, folded to single spaces: a key or file name may hold a newline), and the
    CLI shows it without a traceback and exits with code 2.
    """

    exit_code = 2

    def __init__(self, message: object = ""):
        super().__init__(" ".join(str(message).split()))


class NoUsableData(MedsegError):
    """A data folder that gave no sample at all (nothing found, or none of the cases asked for)."""
