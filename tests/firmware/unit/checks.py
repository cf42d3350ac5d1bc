# Assertions for the device-side cases that hold under any optimisation level (a plain
# `assert` is stripped by `micropython -O`), with the values in the message.


def equal(got, want):
    if got != want:
        raise AssertionError(f"got {got!r}, want {want!r}")


def raises(exc_type, func, *args, says=None):
    """Call func(*args); it must raise exc_type (whose text contains `says`, if given)."""
    try:
        func(*args)
    except exc_type as exc:
        if says is not None and says not in str(exc):
            raise AssertionError(f"{exc_type.__name__} says {str(exc)!r}, not {says!r}")
        return exc
    raise AssertionError(f"no {exc_type.__name__} from {args!r}")
