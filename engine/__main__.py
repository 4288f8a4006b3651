"""`python -m engine ...`: see docs/engine-cli.md."""

import sys

from engine.cli import main

sys.exit(main())
