"""``python -m pearl_cl``: the ``pearl-cl`` command (also what ``torchrun -m pearl_cl`` starts)."""

import sys

from pearl_cl.commands.cli import main

sys.exit(main())
