"""The pretraining room: everything a pretraining run needs besides the host adapter
(:mod:`occon_plugin.host`), the augmentations (:mod:`occon_plugin.augment`) and the methods
(:mod:`occon_plugin.methods`).

* :mod:`~occon_plugin.train.process` — launch folder, launcher rank, foreign Hydra app, one-line stops
  (light: the CLIs import it too);
* :mod:`~occon_plugin.train.runs` — run folders, locks, resume plans, atomic checkpoints, SIGTERM;
* :mod:`~occon_plugin.train.tracking` — W&B of pretraining (logger, pictures of the augmentations);
* :mod:`~occon_plugin.train.host_data` — OA-Crop / BG-Mixup inside the host's own dataset;
* :mod:`~occon_plugin.train.checks` — the object-aware methods' data checks (which pipeline feeds them).

Import graph (no circles, ``tests/test_layout.py``): ``cli -> train -> {methods, augment, host}``;
``methods -> {train.process, train.checks, host}``; ``host`` imports none of them.
"""
