"""python -m bridged."""

from bridged.cli import main

raise SystemExit(main())
