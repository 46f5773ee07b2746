"""Earlier import path of :mod:`storeroom.masking` (keeping secrets out of messages)."""

from storeroom.masking import *  # noqa: F403
from storeroom.masking import __all__ as __all__
