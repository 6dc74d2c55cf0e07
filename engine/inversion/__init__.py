"""Photo inversion: project an aligned face into a generator's W / W+ (``python -m engine.invert``)."""
