"""Past one process: Ray Data pools for measure, collect, train and bulk routing (extra ``ray``).

The caller that owns the choice of backend (the CLI, ``collect``'s pipeline) imports from here; the
modules it serves (``measure``, ``router``) never do.
"""
