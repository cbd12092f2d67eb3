"""LaMa (big-lama) for the Fill job: the generator in torch, safetensors weights, a safe converter.

- ``model``: the architecture (``LamaGenerator``, ``LamaConfig``; ``BIG_LAMA`` is the official one);
- ``weights``: finding, loading (safetensors only) and writing weights, and a tiny random model for tests;
- ``convert``: ``convert_lama_checkpoint(src, dst)`` reads the official checkpoint without unpickling code;
- ``infer``: running the generator on numpy arrays.

``python -m core.lama convert SRC [DST]`` converts from the command line.
"""
