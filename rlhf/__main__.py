"""`python -m rlhf` (and `accelerate launch -m rlhf`) runs the command line."""

import sys

from rlhf.cli import main

sys.exit(main())
