"""Source code as a corpus: the grammars (``grammars``), code cut into units (``units``), and the
walk over a source tree that skips what no person wrote (``tree``)."""
