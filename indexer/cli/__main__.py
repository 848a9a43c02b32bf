"""``python -m indexer.cli``: the ``nerindex`` command without the console script."""

from . import main

main()
