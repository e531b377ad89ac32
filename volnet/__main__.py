"""``python -m volnet`` runs the command line."""

import sys

from volnet.cli import main

sys.exit(main())
