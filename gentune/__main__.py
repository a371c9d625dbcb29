from gentune.cli import main

if __name__ == "__main__":  # not when imported, e.g. by pytest collecting doctests
    main()
