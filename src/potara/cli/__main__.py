"""``python -m potara.cli``: the ``potara`` command."""

import sys

from .main import main

sys.exit(main())
