import sys

from prs_nb.cli import main

sys.exit(main())
