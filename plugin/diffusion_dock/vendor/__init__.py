"""Pure-Python packages shipped inside the installed plugin (qasync), imported relatively.

Empty in a source checkout: the installer copies them here; ``coreapi`` falls back to the
virtual environment's copies.
"""
