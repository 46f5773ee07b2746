"""``python -m storeroom.cli``."""

from storeroom.cli import main

main()
