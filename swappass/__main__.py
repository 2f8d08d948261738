"""``python -m swappass``: the ``swappass`` command."""
import sys

from .cli import main

sys.exit(main())
