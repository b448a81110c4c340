"""`python scripts/report.py PATH...` is `lineage report PATH...` (see lineage/report/cli.py)."""

import sys

from lineage.cli import main

if __name__ == "__main__":
    sys.exit(main(["report", *sys.argv[1:]]))
