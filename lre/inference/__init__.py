"""Running a model on features: chunking long inputs, combining chunks, result records."""
