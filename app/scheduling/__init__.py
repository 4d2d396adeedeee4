"""When texts are decoded: the decode thread, admission to the queue, and batching."""
