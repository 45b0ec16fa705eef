"""`python -m retrieval ...` (and `torchrun -m retrieval ...`) runs the CLI."""

from retrieval.cli import main

if __name__ == "__main__":
    main()
