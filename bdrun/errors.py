"""The one exception type that reaches the user as a single line instead of a traceback."""


class BdrunError(Exception):
    """A problem with the user's input or environment.

    The message must name the problem and the fix; the command line prints it as one line and exits 2.
    Programming errors stay ordinary exceptions so that their tracebacks are not hidden.
    """


def check(condition: bool, message: str) -> None:
    """Raise :class:`BdrunError` with ``message`` unless ``condition`` holds."""
    if not condition:
        raise BdrunError(message)
