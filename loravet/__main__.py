"""`python -m loravet` is the same as the `loravet` console script."""

import sys

from loravet.cli import main

sys.exit(main())
