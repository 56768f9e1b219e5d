"""Run the command line as ``python -m flowfit``."""

from flowfit.cli.app import main

main()
