"""``python -m icnn_cli``: the ``icnn`` command, for when the console script is not on PATH."""

from icnn_cli.cli import main

if __name__ == "__main__":
    main()
