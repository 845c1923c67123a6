"""`python -m app.remote`: the `ccserver` console script without the script."""

from app.remote.cli import main

main()
