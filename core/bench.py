"""``python -m core.bench``: the README's name for the engine benchmark (``core.devtools.bench``)."""

if __name__ == "__main__":
    import sys

    from .devtools.bench.cli import main

    sys.exit(main())
