import sys

from fxbatch.cli import main

sys.exit(main())
