"""Earlier import path of :mod:`storeroom.orm.migration`, kept working."""

from storeroom.orm.migration import *  # noqa: F403
from storeroom.orm.migration import __all__ as __all__
