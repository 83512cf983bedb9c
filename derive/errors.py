"""The one exception type for bad input."""


class DeriveError(ValueError):
    """Bad input to derive: the message names the value and what is allowed.

    >>> try:
    ...     raise DeriveError("depth must be an integer >= 1, got 0")
    ... except ValueError as err:
    ...     print(err)
    depth must be an integer >= 1, got 0
    """


def choice_error(what: str, value: object, allowed: tuple[str, ...]) -> DeriveError:
    """Build the error for a name outside a fixed set of choices.

    >>> print(choice_error("init", "foo", ("xavier", "he")))
    unknown init 'foo': choose one of xavier, he
    """
    return DeriveError(f"unknown {what} {value!r}: choose one of {', '.join(allowed)}")
