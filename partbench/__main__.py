"""`python -m partbench ...` (what torchrun launches) is the same as the `partbench` command."""

from partbench.cli import main

main()
