"""Each model's hand-written backward checked against jax.grad, PyTorch autograd and each other."""
