"""``python -m scoresde`` runs the ``scoresde`` command."""

import sys

from .cli import main

sys.exit(main())
