"""`python run.py modification=pruning ratio=0.5` (or `-m` for sweeps): the same as
`lineage run ...`, for a checkout. The job itself is lineage.app."""

from lineage.app import main

if __name__ == "__main__":
    main()
