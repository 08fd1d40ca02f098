"""``python -m sim2online_envs`` runs the command line (see :mod:`sim2online_envs.cli`)."""

import sys

from sim2online_envs.cli import main

sys.exit(main())
