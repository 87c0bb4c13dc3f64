"""One exception type for every user mistake: the CLI prints its message as one line and exits 2."""


class MedsegError(Exception):
    """A problem with the user's input (file, config key, data) that the user can fix.

    The message must name the file or config key at fault; the CLI shows it as one line
    (no traceback) and exits with code 2.
    """

    exit_code = 2
