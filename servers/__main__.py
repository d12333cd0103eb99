"""``python -m servers MODEL SERVICE [options]``: see :mod:`servers.cli`."""

from servers.cli import main

raise SystemExit(main())
