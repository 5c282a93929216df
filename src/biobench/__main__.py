import sys

from biobench.cli import main

sys.exit(main())
