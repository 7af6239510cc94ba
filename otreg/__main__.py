"""``python -m otreg``: the same as the ``otreg`` command."""

from .cli import main

if __name__ == "__main__":
    main()
