"""What the read-side verbs compute: inspection, verify, diff, convexity, health, plot.

Each module returns plain report data; ``icnn_cli.render`` draws it and the CLI
chooses the output. One array comparison (:mod:`compare`) serves ``diff`` and
``verify``.
"""
