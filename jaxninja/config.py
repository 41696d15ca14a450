"""Configuration: frozen dataclasses, one comment per default.

The defaults are the notebook's (makemore part 4) for the gradient checks; training overrides
`n_hidden` to 200 as the notebook's exercise 4 does.
"""

from dataclasses import dataclass

from jaxninja.errors import UsageError

DTYPES = ("float32", "float64")


@dataclass(frozen=True)
class ModelConfig:
    vocab_size: int = 27  # set from the data's Vocab; 27 is names.txt's ('.' + a-z)
    block_size: int = 3  # characters of context that predict the next one
    n_embd: int = 10  # dimension of a character embedding
    n_hidden: int = 64  # hidden units (64 in the notebook's checks, 200 in its training)
    eps: float = 1e-5  # added to the BatchNorm variance before the inverse square root
    dtype: str = "float32"  # parameter and activation dtype: float32 or float64

    def __post_init__(self) -> None:
        for name in ("vocab_size", "block_size", "n_embd", "n_hidden"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise UsageError(f"{name.replace('_', '-')} must be an integer >= 1, got {value!r}")
        if self.vocab_size < 2:
            raise UsageError("vocab_size must be >= 2 (the terminator '.' and one character)")
        if self.dtype not in DTYPES:
            raise UsageError(f"dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        if not self.eps > 0:
            raise UsageError(f"eps must be > 0, got {self.eps!r}")


def check_batch_size(batch_size: int, n_examples: int | None = None, split: str = "train") -> None:
    """BatchNorm's Bessel-corrected variance divides by n-1, so a batch needs two examples."""
    if not isinstance(batch_size, int) or batch_size < 2:
        raise UsageError(
            f"batch size must be >= 2 (BatchNorm's variance divides by n-1), got {batch_size!r}"
        )
    if n_examples is not None and n_examples < batch_size:
        raise UsageError(
            f"the {split} split has {n_examples} examples, fewer than one batch of {batch_size}: "
            "use a smaller --batch-size or a larger words file"
        )
