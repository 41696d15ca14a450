"""Training jitted: the loop (chunks, schedule, signals, the plot), devices and processes,
checkpoints, sampling."""
