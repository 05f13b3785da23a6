"""Standard-library modules newer than the oldest Python ceimap supports (``requires-python``: 3.10).

- ``tomllib`` (3.11+): on Python 3.10 the ``tomli`` package (a dependency there), which has the same API.
"""

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

__all__ = ["tomllib"]
