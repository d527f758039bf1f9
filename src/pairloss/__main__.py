"""``python -m pairloss``: the command line (also ``torchrun ... -m pairloss train ...``)."""

from pairloss.cli import main

if __name__ == "__main__":
    main()
