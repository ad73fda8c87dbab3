"""`python -m rotld_cli` runs the same CLI as the `rotld` console script."""

from rotld_cli.cli import main

main()
