"""The training side: the one loop every method shares, its batching, checkpoints and run folders."""
