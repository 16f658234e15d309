import sys

from edgeann.cli import main

sys.exit(main())
