"""Records out: batches in per-identity order, the CleverTap client, failed file, checkpoints."""
