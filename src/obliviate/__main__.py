from obliviate.cli.main import main

main()
