"""Each layer's backward as a VJP, against jax.vjp with a random cotangent, in float64."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxninja.models import layers

RTOL = 1e-12  # float64: only the order of summation separates the two


def rand(seed, shape, scale=1.0):
    """Seeded float64 normals, drawn by numpy: jax.random would compile a program per shape."""
    return jnp.asarray(scale * np.random.default_rng(seed).standard_normal(shape))


def assert_close(got, want, rtol=RTOL):
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        assert g.shape == w.shape and g.dtype == w.dtype
        scale = float(jnp.abs(w).max())
        assert float(jnp.abs(g - w).max()) <= rtol * scale, (g, w)


def vjp(f, primals, cotangent):
    """jax.vjp's pullback of `cotangent`, jitted (eager, every op would compile on its own)."""
    primals = primals if isinstance(primals, tuple) else (primals,)
    return jax.jit(lambda ps, ct: jax.vjp(f, *ps)[1](ct))(primals, cotangent)


def test_embedding():
    C = rand(0, (7, 4))
    X = jnp.asarray(np.random.default_rng(1).integers(0, 7, (9, 3)))  # repeats: scatter-add sums
    out, cache = layers.embedding_forward(C, X)
    assert out.shape == (9, 3, 4)
    dout = rand(2, out.shape)
    (want,) = vjp(lambda c: layers.embedding_forward(c, X)[0], C, dout)
    assert_close(layers.embedding_backward(dout, cache), want)  # vocab_size: a static int


def test_linear():
    x, W, b = rand(0, (5, 6)), rand(1, (6, 3)), rand(2, (3,))
    out, cache = layers.linear_forward(x, W, b)
    dout = rand(3, out.shape)
    want = vjp(lambda *a: layers.linear_forward(*a)[0], (x, W, b), dout)
    assert_close(jax.jit(layers.linear_backward)(dout, cache), want)


@pytest.mark.parametrize("n", [2, 3, 32])
def test_batchnorm(n):
    x = rand(0, (n, 8), 3.0) + 1.5
    gain, bias = 1 + rand(1, (1, 8), 0.1), rand(2, (1, 8), 0.1)
    out, cache = layers.batchnorm_forward(x, gain, bias, 1e-5)
    dout = rand(3, out.shape)
    want = vjp(lambda *a: layers.batchnorm_forward(*a, 1e-5)[0], (x, gain, bias), dout)
    assert_close(jax.jit(layers.batchnorm_backward)(dout, cache), want, rtol=1e-10)
    assert np.allclose(cache.bnvar, np.var(np.asarray(x), axis=0, ddof=1, keepdims=True))


def test_tanh():
    x = rand(0, (4, 5), 2.0)
    h, cache = layers.tanh_forward(x)
    dh = rand(1, h.shape)
    (want,) = vjp(lambda a: layers.tanh_forward(a)[0], x, dh)
    assert_close(jax.jit(layers.tanh_backward)(dh, cache), want)


def test_cross_entropy():
    logits = rand(0, (6, 5), 3.0)
    Y = jnp.array([0, 4, 2, 2, 1, 3])
    _loss, cache = layers.cross_entropy_forward(logits, Y)
    dloss = rand(1, ())
    (want,) = vjp(lambda z: layers.cross_entropy_forward(z, Y)[0], logits, dloss)
    assert_close(jax.jit(layers.cross_entropy_backward)(dloss, cache), want)
