"""The models: layers (each a forward keeping its cache and a hand-written backward), the part-4
MLP with its notebook names and exercise-1 backward, the part-5 WaveNet, and the interface the
training loop asks (registry)."""
