"""`python -m revbench.cli ...`: the same as the `revbench` command."""
import sys

from revbench.cli import main

sys.exit(main())
