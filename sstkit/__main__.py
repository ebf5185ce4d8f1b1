"""``python -m sstkit`` works like the ``sstkit`` console script."""

from sstkit.cli import main

if __name__ == "__main__":
    main()
