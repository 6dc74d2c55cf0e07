"""Training the demo generator (``python -m engine.train_demo``): the training images and the
rendered faces (``data``), the settings and schedules (``config``), the trainer (``trainer``)."""
