"""`python -m jaxninja`: the same as the `jaxninja` console script."""

import sys

from jaxninja.cli import main

sys.exit(main())
