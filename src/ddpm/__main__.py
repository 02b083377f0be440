"""``python -m ddpm`` runs the command-line tool."""

from ddpm.cli import main

raise SystemExit(main())
