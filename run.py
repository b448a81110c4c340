"""`python run.py modification=pruning ratio=0.5` (or `-m` for sweeps): the same as
`lineage run ...`, for a checkout. The job itself is lineage.app."""

import sys

if __name__ == "__main__":
    from lineage.cli import refused_for_memory

    if not {"-h", "--help"} & set(sys.argv) and refused_for_memory("run.py"):
        sys.exit(2)
    from lineage.app import main

    main()
