"""``python -m cdtools``: list the steps, or run one (``python -m cdtools build …``)."""
from __future__ import annotations

import sys

from cdtools.steps import main

if __name__ == "__main__":
    sys.exit(main(prog="python -m cdtools"))
