"""``python -m core.fill_eval``: the README's name for the fill comparison (``core.devtools.fill_eval``)."""

if __name__ == "__main__":
    import sys

    from .devtools.fill_eval import main

    sys.exit(main())
