"""`python -m dmha.cli ...`: the same as the `dmha` command."""
import sys

from . import main

sys.exit(main())
