"""Configuration: frozen dataclasses, one comment per default; the only home of every default
(the CLI's flags and their help texts are read off them).

ModelConfig's defaults are the part-4 notebook's MLP for the gradient checks; its exercise 4
trains a wider hidden layer. `--model wavenet` is part 5's lecture, with its own sizes and
schedule: `model_config` and `training_config` apply what each model changes (MODEL_SIZES,
SCHEDULES). `--model gpt` is part 6's makemore.py Transformer: its sizes and AdamW are
makemore's defaults.
"""

from dataclasses import dataclass, fields
from decimal import Decimal

from jaxninja.errors import UsageError

VERSION = "0.1.0"  # names the grader's cache entries, with a digest of the code
DTYPES = ("float32", "float64")
EVAL_CHUNK = 65_536  # examples an evaluation step takes at once: memory stays flat in the split
# part 4's MLP (the notebook's names), part 5's WaveNet (a stack), part 6's makemore.py Transformer
MODELS = ("mlp", "wavenet", "gpt")
WAVENET_FLATTEN = 2  # the lecture's FlattenConsecutive(2): each stage pairs neighbours, T / 2


@dataclass(frozen=True)
class ModelConfig:
    vocab_size: int = 27  # set from the data's Vocab; 27 is names.txt's ('.' + a-z)
    block_size: int = 3  # characters of context that predict the next one
    n_embd: int = 10  # dimension of a character embedding
    n_hidden: int = 64  # hidden units (64 in the notebook's checks, 200 in its training)
    eps: float = 1e-5  # added to the BatchNorm variance before the inverse square root
    dtype: str = "float32"  # parameter and activation dtype: float32 or float64
    model: str = "mlp"  # which model: one of MODELS (the sizes above are the MLP's)
    n_layer: int = 4  # the GPT's Transformer blocks (makemore's default); other models: unused
    n_head: int = 4  # the GPT's attention heads per block (makemore's); must divide n_embd

    def __post_init__(self) -> None:
        for name in ("vocab_size", "block_size", "n_embd", "n_hidden", "n_layer", "n_head"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise UsageError(f"{name.replace('_', '-')} must be an integer >= 1, got {value!r}")
        if self.vocab_size < 2:
            raise UsageError("vocab_size must be >= 2 (the terminator '.' and one character)")
        if self.dtype not in DTYPES:
            raise UsageError(f"dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        if not self.eps > 0:
            raise UsageError(f"eps must be > 0, got {self.eps!r}")
        if self.model not in MODELS:
            raise UsageError(f"--model {self.model!r} is not a model: choose {' or '.join(MODELS)}")
        if self.model == "wavenet" and not _flattens_to_one(self.block_size, WAVENET_FLATTEN):
            raise UsageError(
                f"--block-size {self.block_size} does not reduce to 1 through the WaveNet's "
                f"FlattenConsecutive({WAVENET_FLATTEN}) stages: give a power of {WAVENET_FLATTEN} "
                "above 1 (2, 4, 8, 16, ...; the lecture's 8)"
            )
        if self.model == "gpt" and self.n_embd % self.n_head:
            raise UsageError(
                f"--n-embd {self.n_embd} does not split into {self.n_head} heads: give an n-embd "
                "that n-head divides (makemore's 64 and 4)"
            )

    def described(self) -> str:
        """The config as its repr, less the fields this model does not read (UNUSED)."""
        used = [f.name for f in fields(self) if f.name not in UNUSED[self.model]]
        return f"ModelConfig({', '.join(f'{k}={getattr(self, k)!r}' for k in used)})"


# the fields a model does not read: the GPT's LayerNorms fix their own eps (transformer.py)
UNUSED = {
    "mlp": ("n_layer", "n_head"),
    "wavenet": ("n_layer", "n_head"),
    "gpt": ("n_hidden", "eps"),
}


def _flattens_to_one(t: int, n: int) -> bool:
    """Whether t is n**k for some k >= 1: k stages of FlattenConsecutive(n) leave one position."""
    stages = 0
    while t > 1 and t % n == 0:
        t, stages = t // n, stages + 1
    return t == 1 and stages >= 1


TRAINING_N_HIDDEN = 200  # the hidden layer of the notebook's exercise 4 (its checks use 64)
WAVENET_SIZES = {"block_size": 8, "n_embd": 24, "n_hidden": 128}  # the part-5 lecture's
# makemore.py's Transformer: 4 blocks of 4 heads, n_embd 64; its block size is the longest word
# + 1 (a start token, then the word), 16 for names.txt
GPT_SIZES = {"block_size": 16, "n_embd": 64, "n_layer": 4, "n_head": 4}
# What each model changes in ModelConfig's defaults, for a check and for training.
MODEL_SIZES = {
    ("mlp", "check"): {},  # ModelConfig's own: the notebook's gradient check
    ("mlp", "train"): {"n_hidden": TRAINING_N_HIDDEN},
    ("wavenet", "check"): WAVENET_SIZES,  # the lecture has one size for all it does
    ("wavenet", "train"): WAVENET_SIZES,
    ("gpt", "check"): GPT_SIZES,  # makemore has one size for all it does
    ("gpt", "train"): GPT_SIZES,
}
# What each model changes in TrainConfig's defaults: the part-5 lecture decays the rate at 150k
# and its BatchNorm1d's running statistics move with momentum 0.1; makemore.py trains its GPT
# with AdamW (lr 5e-4, betas (0.9, 0.99), eps 1e-8, weight decay 0.01) at one rate throughout,
# evaluates every 500 steps and keeps the best model; on our split the val loss is lowest near
# 20k steps and rises after (it overfits), so 25k steps pass the best.
SCHEDULES = {
    "mlp": {},
    "wavenet": {"lr_decay_step": 150_000, "bn_momentum": 0.1},
    "gpt": {
        "optimizer": "adamw",
        "beta2": 0.99,
        "lr_decay": 1.0,
        "steps": 25_000,
        "eval_every": 500,
    },
}


def model_config(model: str = "mlp", use: str = "check", **fields) -> ModelConfig:
    """A model's config at its defaults for `use` ("check" or "train"), `fields` given."""
    if model not in MODELS:
        raise UsageError(f"--model {model!r} is not a model: choose {' or '.join(MODELS)}")
    return ModelConfig(**{"model": model, **MODEL_SIZES[model, use], **fields})


def training_model(**fields) -> ModelConfig:
    """The model exercise 4 trains: the notebook's, with its wider hidden layer."""
    return model_config(fields.pop("model", "mlp"), "train", **fields)


def training_config(model: str = "mlp", **fields) -> "TrainConfig":
    """TrainConfig at the defaults of `model`'s lecture, `fields` given."""
    return TrainConfig(**{**SCHEDULES[model], **fields})


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


# seconds a grade gives the learner's function on one case, tracing and compiling included
DEFAULT_TIMEOUT = 60.0

# where a step's gradients come from: the model's hand-written backward, or jax.grad of its
# forward (the control a hand-written run is compared with)
GRADIENTS = ("manual", "autodiff")
# adamw: Adam with decoupled weight decay (torch.optim.AdamW, optax.adamw), makemore.py's
OPTIMIZERS = ("sgd", "adam", "adamw")
# the notebook's SGD rate; Adam's customary one; makemore.py's AdamW rate
DEFAULT_LR = {"sgd": 0.1, "adam": 1e-3, "adamw": 5e-4}


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 200_000  # SGD steps, the notebook's exercise 4
    batch_size: int = 32  # examples per step, drawn with replacement from the train split
    lr: float | None = None  # initial learning rate; None: DEFAULT_LR of the optimizer
    lr_decay_step: int = 100_000  # the step from which the rate is lr * lr_decay (SCHEDULES)
    lr_decay: float = 0.1  # so 0.1 -> 0.01, the notebook's schedule
    optimizer: str = "sgd"  # sgd (the notebook's), adam or adamw (optax), on the manual gradients
    beta1: float = 0.9  # adam/adamw: decay of the gradient's running mean (optax's, makemore's)
    beta2: float = 0.999  # adam/adamw: of its running square (optax's; makemore's 0.99: SCHEDULES)
    adam_eps: float = 1e-8  # adam/adamw: added to the running square's root (optax's, makemore's)
    weight_decay: float = 0.01  # adamw only: decoupled decay, times lr (torch's, makemore's)
    seed: int = 2147483647  # the notebook's generator seed: initialisation and batch stream
    chunk_steps: int = 1000  # steps per jitted lax.scan call; progress updates in between
    checkpoint_every: int = 10_000  # steps between checkpoints
    bn_momentum: float = 0.001  # running BatchNorm statistics, as in makemore part 3 (SCHEDULES)
    # steps between evaluations of the val split, each logged, plotted and, when the best so
    # far, kept as best.safetensors; None: none (mlp, wavenet), the GPT's 500 (SCHEDULES)
    eval_every: int | None = None
    gradients: str = "manual"  # manual: the hand-written backward; autodiff: jax.grad's
    # rows (the GPT), one model: each step runs on the fewest of a few lengths (5/8 or 6/8 of
    # block_size, or all) that holds its batch's targets; the rest is padding no loss reads
    # (step.py's _trimmed: exact; on names.txt a step takes about 0.8x the time)
    trim_rows: bool = True

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise UsageError(f"optimizer must be one of {', '.join(OPTIMIZERS)}")
        if self.lr is None:
            object.__setattr__(self, "lr", DEFAULT_LR[self.optimizer])
        for name in ("steps", "chunk_steps", "checkpoint_every"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise UsageError(f"{name.replace('_', '-')} must be an integer >= 1, got {value!r}")
        check_batch_size(self.batch_size)
        if not (isinstance(self.lr_decay_step, int) and self.lr_decay_step >= 0):
            raise UsageError(f"lr-decay-step must be an integer >= 0, got {self.lr_decay_step!r}")
        for name in ("lr", "lr_decay"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and 0 < value < float("inf")):
                raise UsageError(f"{name.replace('_', '-')} must be a number > 0, got {value!r}")
        if not (isinstance(self.seed, int) and 0 <= self.seed < 2**32):
            # jax.random.key keeps 32 bits without x64: larger seeds would collide
            raise UsageError(f"seed must be an integer in [0, 2**32), got {self.seed!r}")
        if not 0 < self.bn_momentum <= 1:
            raise UsageError(f"bn-momentum must be in (0, 1], got {self.bn_momentum!r}")
        for name in ("beta1", "beta2"):
            if not (isinstance(getattr(self, name), int | float) and 0 <= getattr(self, name) < 1):
                raise UsageError(f"{name} must be in [0, 1), got {getattr(self, name)!r}")
        if not (isinstance(self.adam_eps, int | float) and 0 < self.adam_eps < float("inf")):
            raise UsageError(f"adam-eps must be a number > 0, got {self.adam_eps!r}")
        if self.eval_every is not None and not (
            isinstance(self.eval_every, int) and self.eval_every >= 1
        ):
            raise UsageError(f"eval-every must be an integer >= 1, got {self.eval_every!r}")
        if self.gradients not in GRADIENTS:
            raise UsageError(f"gradients must be one of {', '.join(GRADIENTS)}")
        if not (isinstance(self.weight_decay, int | float) and 0 <= self.weight_decay < 1):
            raise UsageError(f"weight-decay must be in [0, 1), got {self.weight_decay!r}")

    @property
    def lr_decayed(self) -> float:
        """lr * lr_decay as the decimals written: 0.1 * 0.1 is exactly 0.01, not
        0.010000000000000002 (float64) or 0.0100000007 (float32); rounded to the dtype once."""
        return float(Decimal(repr(self.lr)) * Decimal(repr(self.lr_decay)))
