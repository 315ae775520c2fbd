"""``python -m obliviate``: the command line (importing it applies the allocator settings first)."""

from obliviate.cli.main import main

main()
