"""Everything that knows Orbax's files: one job per module.

- ``layout``: what a path holds by Orbax's rules (committed or not, manager roots, steps).
- ``writing``: atomic, durable writes (one writer, for one process or many).
- ``metadata`` / ``metadata_files``: the step's metadata and the tree's leaf records,
  Orbax's JSON read directly first, Orbax's ``metadata()`` as the fallback.
- ``arrays``: array data leaf by leaf; ``reader``: the reader that checks fingerprints.
- ``spec`` / ``provenance``: the icnn spec embedded in a checkpoint, and its header lines.
"""
