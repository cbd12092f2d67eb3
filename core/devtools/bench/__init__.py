"""``python -m core.devtools.bench``: the engine against stock diffusers and against the hardware's floor.

Nine rows, each with its goal (issue 7; row 9 from issue 18), plus the measured effect of every piece of the speed policy.
Full-size SD2 architectures with random weights (``core.devtools.tiny_models`` full mode, fp16 files, built once
into the cache folder and reused); ``--quick`` finishes within 15 minutes on a 2-core machine;
``--quick --smoke`` runs every row on the tiny test models in under a minute (a CI test).

Modules: ``cli`` (order, outputs), ``profiles`` (what each mode measures), ``machine`` (CPU, load,
process memory), ``common`` (timers, images, models), ``child`` (fresh processes for memory figures),
and one module per row: ``unet`` (1), ``stock`` (2, 8 and the caches), ``canvas`` (3), ``upscale`` (4
and the tile size), ``roundtrip`` (5), ``sharing`` (6 and the memory policy), ``coldstart`` (7),
``expand`` (9).
"""
