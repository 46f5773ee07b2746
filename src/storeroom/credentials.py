"""Earlier import path of :mod:`storeroom.backends.obstore.credentials`, kept working."""

from storeroom.backends.obstore.credentials import *  # noqa: F403
from storeroom.backends.obstore.credentials import __all__ as __all__
