"""The ``obliviate`` command line: one thin module per command over the library (``obliviate.cli.main``)."""
