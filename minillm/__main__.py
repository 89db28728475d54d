"""``python -m minillm ...`` runs the command-line interface (see :mod:`minillm.cli`)."""
from .cli import main

raise SystemExit(main())
