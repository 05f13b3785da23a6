"""The one exception type raised at ceimap's boundaries (readers, CLI, plugin inputs)."""

from os import PathLike


class CeimapInputError(ValueError):
    """Bad input: a file or parameter that ceimap cannot use.

    The message always names the offending file (when there is one) and the problem, so that a user
    can act on it without reading a traceback. The CLI turns it into exit status 2.

    Parameters
    ----------
    problem : str
        What is wrong, in words a user understands.
    path : str or path-like, optional
        The file the problem is in.

    Examples
    --------
    >>> str(CeimapInputError("no energy axis found", path="scan.hdf5"))
    'scan.hdf5: no energy axis found'
    """

    def __init__(self, problem: str, path: "str | PathLike | None" = None):
        self.problem = problem
        self.path = None if path is None else str(path)
        super().__init__(problem if self.path is None else f"{self.path}: {problem}")
