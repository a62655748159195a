"""``python -m pipeline.cli`` (and ``torchrun -m pipeline.cli``): the ``synth`` command."""

from . import main

if __name__ == "__main__":  # engines spawn processes: keep the guard
    main()
