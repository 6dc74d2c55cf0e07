"""One reader per checkpoint format (``nvlabs``, ``rosinality``, ``stylecast``) and what they
share (``common``: the error, the record, tensor matching). The entry point is
:mod:`engine.synthesis.checkpoints`."""
