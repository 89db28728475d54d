"""``python -m minillm ...`` runs the command-line interface (see :mod:`minillm.apps.cli`)."""
from .apps.cli import main

raise SystemExit(main())
