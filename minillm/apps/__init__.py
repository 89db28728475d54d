"""The applications built on the library: the command line (``minillm ...``), the task recipes
behind ``pretrain``/``finetune``, the two-command demo and the benchmarks.

Nothing in the core (backend, autograd, functional, nn, optim, models, data, training)
imports from here; read the core on its own, then see how these put it to work.
"""
