from gentune.cli import main

main()
