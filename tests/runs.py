"""The training run the tests share. Runs that differ only in what no step reads (steps, chunks,
checkpoints, seed) share one compiled chunk (train.chunk_runner), so a test that needs another
run changes those where it can, and the rest only where its point is (an optimizer, a learning
rate that diverges, a wider model)."""

from jaxninja.config import ModelConfig, TrainConfig

MC = ModelConfig(vocab_size=27, n_hidden=64)
TC = TrainConfig(steps=300, chunk_steps=100, checkpoint_every=100, lr_decay_step=150)
# the same run on the command line (chunks of 100 from --checkpoint-every)
TC_FLAGS = ["--n-hidden", "64", "--checkpoint-every", "100", "--lr-decay-step", "150"]
