"""`python -m flopwise` is the `flopwise` command."""

import sys

from flopwise.cli import main

sys.exit(main())
