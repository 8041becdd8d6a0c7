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


def integer(value: object, key: str, example: str) -> int:
    """``value`` if it is an integer (not a bool, float or string), else a one-line error naming ``key``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise BdrunError(f"{key}={value} must be an integer, e.g. {example}")
    return value
