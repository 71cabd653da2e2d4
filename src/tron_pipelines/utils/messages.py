"""Error text as one line: what the command line and the demo show of an exception from a library they call."""


def first_line(error: BaseException, with_type: bool = True) -> str:
    """The first non-empty line of ``error``'s message, ``"TypeName: line"`` when ``with_type`` (the type tells an
    ``OSError`` from a ``ValueError`` when the message alone does not). Empty messages give ``"TypeName: "``."""
    lines = str(error).strip().splitlines()
    line = lines[0] if lines else ""
    return f"{type(error).__name__}: {line}" if with_type else line


__all__ = ["first_line"]
