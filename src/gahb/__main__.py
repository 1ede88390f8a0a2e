import sys

from gahb.cli import main

sys.exit(main())
