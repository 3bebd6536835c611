"""``python -m klinestore`` is the ``klinestore`` command."""

from klinestore.cli import main

raise SystemExit(main())
