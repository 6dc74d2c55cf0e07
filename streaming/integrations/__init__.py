"""Voice-agent frameworks: StyleCast inside Pipecat (``streaming.integrations.pipecat``), each an
optional extra imported only by its own module."""
