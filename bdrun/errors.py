"""The one exception type that reaches the user as a single line instead of a traceback."""

import sys


class BdrunError(Exception):
    """A problem with the user's input or environment.

    The message must name the problem and the fix; the command line prints it as one line and exits 2.
    Programming errors stay ordinary exceptions so that their tracebacks are not hidden.
    """


def check(condition: bool, message: str) -> None:
    """Raise :class:`BdrunError` with ``message`` unless ``condition`` holds."""
    if not condition:
        raise BdrunError(message)


def warning(message: str) -> None:
    """A problem that does not stop the run, as one line on stderr (``bdrun: warning: ...``)."""
    print(f"bdrun: warning: {message}", file=sys.stderr, flush=True)


def integer(value: object, key: str, example: str) -> int:
    """``value`` if it is an integer (not a bool, float or string), else a one-line error naming ``key``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise BdrunError(f"{key}={value} must be an integer, e.g. {example}")
    return value


def boolean(value: object, key: str) -> bool:
    """``value`` if it is a bool, else a one-line error naming ``key`` (``bool("no")`` would silently be true)."""
    if not isinstance(value, bool):
        raise BdrunError(f"{key}={value} must be true or false")
    return value


SEED_MAX = 2**32 - 1


def seed_integer(value: object, key: str = "seed") -> int:
    """A run's seed: an integer in 0..2**32-1, the range every generator bdrun seeds accepts. Outside it torch's
    ``manual_seed`` fails with a traceback (beyond 64 bits) and numpy's (federated shards) on a negative seed,
    in the middle of a run; bdrun's derived seeds (seed * 1_000_003 + n) stay within 64 bits from 32."""
    number = integer(value, key, f"{key}=42")
    check(0 <= number <= SEED_MAX, f"{key}={number} is out of range; use an integer in 0..{SEED_MAX}, e.g. {key}=42")
    return number
