import sys

from tryage.cli import main

sys.exit(main())
