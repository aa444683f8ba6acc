"""Networks of Knowledge Translation (KT; Sun et al., arXiv 2401.05772), in Flax Linen.

The MNIST-like classifier is ``BeginBlock -> middle block -> LastBlock`` on (B, 28, 28, 1)
images in [0, 1] (NHWC):

- :class:`BeginBlock`: conv3x3 1->6 (no bias), BatchNorm, ReLU, max-pool 3/2/1
  -> (B, 14, 14, 6); 66 parameters.
- :class:`BasicBlock` (the "large" middle block): two conv3x3 6->6 with BatchNorm, identity
  shortcut; 672 parameters.
- :class:`SimpleBlockNoBn` (the "compressed" middle block): conv3x3 6->3, ReLU,
  conv3x3 3->6, identity shortcut, no normalisation; 324 parameters.
- :class:`LastBlock`: conv1x1 6->12 stride 2 (no bias), BatchNorm, ReLU, flatten (588),
  Dense 588->10; 5,986 parameters.

:class:`MLPMixer` is the translator: it reads the two 3x3 kernels of a BasicBlock as
72 tokens of 9 features and writes the two kernels of a SimpleBlockNoBn (4,096,621
parameters with the paper's defaults).

Initialisation follows PyTorch's defaults (uniform, bound 1/sqrt(fan_in), for convolution
and linear weights and linear biases), so the random middle block of the "Random Init"
baseline has the distribution of the reference code's. BatchNorm momentum 0.9 in Flax is
PyTorch's 0.1; Flax's running variance uses the biased batch variance (PyTorch: unbiased).
"""
from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["CANONICAL", "MIDDLE_BLOCKS", "BasicBlock", "BeginBlock", "LastBlock", "MLPMixer",
           "SimpleBlockNoBn", "basic_tokens", "canonical_basic", "canonical_simple",
           "classifier_apply", "count_params", "hidden_order", "init_classifier", "init_simple",
           "kernels_to_output", "mixer_param_count", "permute_basic", "permute_simple",
           "simple_from_output", "simple_to_kernels"]

_torch_kernel_init = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


def _torch_bias_init(fan_in: int):
    """PyTorch's Linear bias init: U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    bound = 1.0 / np.sqrt(fan_in)

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)
    return init


def patch_conv(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
               dimension_numbers=None, feature_group_count=1, precision=None, **unused):
    """``lax.conv_general_dilated`` for NHWC/HWIO without dilation or groups, written as
    shifted slices + one matmul (im2col).

    Same values as XLA's convolution, but ``jax.vmap`` over the kernel turns it into a
    batched matmul instead of a grouped convolution, which XLA:CPU runs ~10x slower; the
    pair generator vmaps thousands of these tiny networks.

    Args:
      lhs: (B, H, W, I) input; rhs: (kh, kw, I, O) kernel; window_strides: (sh, sw);
      padding: ((top, bottom), (left, right)).
    """
    del unused
    if (feature_group_count != 1 or any(d not in (None, 1) for d in
                                        tuple(lhs_dilation or ()) + tuple(rhs_dilation or ()))):
        raise ValueError("patch_conv supports neither groups nor dilation")
    kh, kw, i, o = rhs.shape
    x = jnp.pad(lhs, ((0, 0), tuple(padding[0]), tuple(padding[1]), (0, 0)))
    sh, sw = window_strides
    h = (x.shape[1] - kh) // sh + 1
    w = (x.shape[2] - kw) // sw + 1
    cols = [x[:, a:a + sh * (h - 1) + 1:sh, b:b + sw * (w - 1) + 1:sw, :]
            for a in range(kh) for b in range(kw)]
    patches = cols[0] if len(cols) == 1 else jnp.concatenate(cols, axis=-1)
    return jnp.einsum("bhwk,ko->bhwo", patches, rhs.reshape(kh * kw * i, o),
                      precision=precision)


def max_pool_3x3_s2(x):
    """Max-pool, window 3, stride 2, padding 1 (padding never wins: -inf), NHWC.

    The maximum of nine strided slices: its gradient is elementwise, unlike
    ``reduce_window``'s select-and-scatter, which is slow on CPU and under vmap.
    """
    xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=-jnp.inf)
    h = (xp.shape[1] - 3) // 2 + 1
    w = (xp.shape[2] - 3) // 2 + 1
    out = None
    for a in range(3):
        for b in range(3):
            s = xp[:, a:a + 2 * (h - 1) + 1:2, b:b + 2 * (w - 1) + 1:2, :]
            out = s if out is None else jnp.maximum(out, s)
    return out


def _conv(features, kernel=3, stride=1, name=None):
    pad = kernel // 2
    return nn.Conv(features, (kernel, kernel), strides=(stride, stride),
                   padding=((pad, pad), (pad, pad)), use_bias=False,
                   kernel_init=_torch_kernel_init, conv_general_dilated=patch_conv,
                   name=name)


def _bn(train: bool, name=None):
    return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                        name=name)


def _dense(features, fan_in, name=None):
    return nn.Dense(features, kernel_init=_torch_kernel_init,
                    bias_init=_torch_bias_init(fan_in), name=name)


class BeginBlock(nn.Module):
    """(B, 28, 28, 1) -> (B, 14, 14, planes). 66 parameters (+12 BatchNorm statistics)."""
    planes: int = 6

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.relu(_bn(train, "bn")(_conv(self.planes, name="conv")(x)))
        return max_pool_3x3_s2(x)


class BasicBlock(nn.Module):
    """The large middle block, (B, 14, 14, 6) -> same shape. 672 parameters."""
    planes: int = 6

    @nn.compact
    def __call__(self, x, train: bool = False):
        y = nn.relu(_bn(train, "bn1")(_conv(self.planes, name="conv1")(x)))
        y = _bn(train, "bn2")(_conv(self.planes, name="conv2")(y))
        return nn.relu(y + x)


class SimpleBlockNoBn(nn.Module):
    """The compressed middle block, (B, 14, 14, 6) -> same shape. 324 parameters:
    ``conv1`` kernel (3, 3, 6, 3) and ``conv2`` kernel (3, 3, 3, 6) (HWIO)."""
    planes: int = 6

    @nn.compact
    def __call__(self, x, train: bool = False):
        del train  # No normalisation: the same function in training and evaluation.
        y = nn.relu(_conv(self.planes // 2, name="conv1")(x))
        y = _conv(self.planes, name="conv2")(y)
        return nn.relu(y + x)


class LastBlock(nn.Module):
    """(B, 14, 14, 6) -> (B, num_classes) logits. 5,986 parameters (+24 statistics)."""
    planes: int = 12
    num_classes: int = 10

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.relu(_bn(train, "bn")(_conv(self.planes, kernel=1, stride=2,
                                           name="downsample")(x)))
        x = x.reshape(x.shape[0], -1)
        return _dense(self.num_classes, x.shape[-1], name="fc")(x)


MIDDLE_BLOCKS = {"basic": BasicBlock, "simple": SimpleBlockNoBn}


def _check_middle(middle: str):
    if middle not in MIDDLE_BLOCKS:
        raise ValueError(f"unknown middle block {middle!r}; valid: {sorted(MIDDLE_BLOCKS)}")


def init_classifier(key, middle: str = "basic"):
    """Variables of Begin -> ``middle`` -> Last for 28x28x1 inputs (jitted).

    Returns:
      dict ``{"begin": vars, "middle": vars, "last": vars}``; each ``vars`` is a Flax
      variables dict (``params`` and, with BatchNorm, ``batch_stats``).
    """
    _check_middle(middle)
    return _init_classifier(key, middle)


@functools.partial(jax.jit, static_argnums=1)
def _init_classifier(key, middle):
    kb, km, kl = jax.random.split(key, 3)
    x = jnp.zeros((1, 28, 28, 1), jnp.float32)
    begin = BeginBlock().init(kb, x)
    h = jnp.zeros((1, 14, 14, 6), jnp.float32)
    return {"begin": dict(begin), "middle": dict(MIDDLE_BLOCKS[middle]().init(km, h)),
            "last": dict(LastBlock().init(kl, h))}


def init_simple(key):
    """Fresh :class:`SimpleBlockNoBn` ``params`` (PyTorch-style init) for 14x14x6 maps."""
    return SimpleBlockNoBn().init(key, jnp.zeros((1, 14, 14, 6), jnp.float32))["params"]


def _apply(module, variables, x, train):
    if train and "batch_stats" in variables:
        y, upd = module.apply(variables, x, train=True, mutable=["batch_stats"])
        return y, dict(variables, batch_stats=upd["batch_stats"])
    return module.apply(variables, x, train=train), variables


def classifier_apply(variables, x, *, middle: str = "basic", train: bool = False):
    """Logits of the three-block classifier.

    Args:
      variables: as returned by :func:`init_classifier`.
      x: (B, 28, 28, 1) float images in [0, 1].
      middle: "basic" or "simple" (the middle block's kind).
      train: BatchNorm uses batch statistics (and updates its running averages).

    Returns:
      (logits (B, 10), new variables); the variables change only when ``train``.
    """
    _check_middle(middle)
    h, begin = _apply(BeginBlock(), variables["begin"], x, train)
    h, mid = _apply(MIDDLE_BLOCKS[middle](), variables["middle"], h, train)
    logits, last = _apply(LastBlock(), variables["last"], h, train)
    return logits, {"begin": begin, "middle": mid, "last": last}


def count_params(tree) -> int:
    """Number of scalars in a pytree (pass ``variables["params"]`` to skip statistics)."""
    return int(sum(np.prod(np.shape(x)) for x in jax.tree.leaves(tree)))


# --------------------------------------------------------------------------- tokens
def _torch_order(kernel):
    """HWIO kernel (3, 3, I, O) -> PyTorch's (O, I, 3, 3) layout."""
    return jnp.transpose(kernel, (3, 2, 0, 1))


def basic_tokens(basic_params):
    """The translator's input for one BasicBlock: (72, 9) tokens.

    Token ``o * 6 + i`` of each conv (conv1 first, then conv2) is the 3x3 kernel from
    input channel i to output channel o, row-major (the paper's (o i) (s1 s2) order).

    Args:
      basic_params: the block's ``params`` (``conv1``/``conv2`` kernels (3, 3, 6, 6)).
    """
    toks = [_torch_order(basic_params[c]["kernel"]).reshape(-1, 9) for c in ("conv1",
                                                                              "conv2")]
    return jnp.concatenate(toks, axis=0)


def simple_to_kernels(simple_params):
    """A SimpleBlockNoBn's kernels in the translator's target layout.

    Returns:
      (conv1 (3, 6, 3, 3), conv2 (6, 3, 3, 3)) in PyTorch (O, I, kh, kw) order.
    """
    return (_torch_order(simple_params["conv1"]["kernel"]),
            _torch_order(simple_params["conv2"]["kernel"]))


def simple_from_output(out):
    """The translator's (36, 9) output -> SimpleBlockNoBn ``params`` (HWIO kernels).

    Rows 0-17 are conv1 (out 3, in 6), rows 18-35 conv2 (out 6, in 3), each row one
    3x3 kernel, as in the paper's ``chunk``/``reshape``.
    """
    k1 = out[:18].reshape(3, 6, 3, 3)
    k2 = out[18:].reshape(6, 3, 3, 3)
    return {"conv1": {"kernel": jnp.transpose(k1, (2, 3, 1, 0))},
            "conv2": {"kernel": jnp.transpose(k2, (2, 3, 1, 0))}}


def kernels_to_output(k1, k2):
    """Inverse of :func:`simple_from_output` on PyTorch-layout kernels: (36, 9)."""
    return jnp.concatenate([k1.reshape(18, 9), k2.reshape(18, 9)], axis=0)


# --------------------------------------------------------------------------- hidden order
#: ``config.canonical``: "none" (blocks as trained) or "norm" (hidden channels sorted,
#: :func:`canonical_basic` / :func:`canonical_simple`).
CANONICAL = ("none", "norm")


def hidden_order(w_in, rest=()):
    """The canonical order of a block's H hidden channels: a permutation (H,) int32.

    Sorted by the L2 norm of the incoming filter, descending. Ties (equal norms: in
    trained float32 weights practically only exact copies or sign flips) are broken by
    comparing the channels' values lexicographically, incoming filter first, then each
    array of ``rest`` in turn, ascending; two channels tie on every key only when they are
    equal, and then swapping them changes nothing. So the order is a function of the set
    of channels: invariant to any permutation of the input. Pure (jit/vmap-able).

    Args:
      w_in: (kh, kw, I, H) the conv kernel into the hidden channels (HWIO).
      rest: the other per-channel values, each an array (..., H) with the hidden axis
        last (a (kh, kw, H, O) kernel out of the hidden channels: swap its last two axes).
    """
    w = jnp.reshape(w_in, (-1, w_in.shape[-1])).T                        # (H, F_in)
    norm = jnp.sqrt(jnp.sum(jnp.square(w), axis=1))
    keys = jnp.concatenate([-norm[:, None], w] + [jnp.reshape(r, (-1, r.shape[-1])).T
                                                  for r in rest], axis=1)  # (H, 1 + F)
    # Pairwise lexicographic comparison (H is 3 or 6; cheaper to compile than a sort on
    # 1 + F keys): the first key where channels i and j differ decides.
    diff = keys[:, None, :] != keys[None, :, :]                           # (H, H, 1 + F)
    first = jnp.argmax(diff, axis=2)[..., None]
    ki = jnp.take_along_axis(jnp.broadcast_to(keys[:, None, :], diff.shape), first, 2)[..., 0]
    kj = jnp.take_along_axis(jnp.broadcast_to(keys[None, :, :], diff.shape), first, 2)[..., 0]
    same = ~jnp.any(diff, axis=2)
    before = ~same & (ki < kj)                                            # i sorts before j
    h = keys.shape[0]
    earlier = jnp.arange(h)[:, None] < jnp.arange(h)[None, :]
    rank = jnp.sum(before | (same & earlier), axis=0)   # equal channels: by index
    return jnp.zeros(h, jnp.int32).at[rank].set(jnp.arange(h, dtype=jnp.int32))


def permute_simple(params, perm):
    """A SimpleBlockNoBn with its 3 hidden channels reordered, new channel j = old
    ``perm[j]``: conv1's output and conv2's input channels. The same function."""
    return {"conv1": {"kernel": params["conv1"]["kernel"][..., perm]},
            "conv2": {"kernel": params["conv2"]["kernel"][:, :, perm, :]}}


def permute_basic(variables, perm):
    """A BasicBlock with its 6 hidden channels reordered, new channel j = old ``perm[j]``:
    conv1's output channels, BN1's scale/bias (and running mean/var in ``batch_stats``)
    and conv2's input channels. The same function, in training and evaluation mode.

    Args:
      variables: ``{"params": ..., "batch_stats": ...}`` (``batch_stats`` optional).
    """
    p = variables["params"]
    out = {"params": dict(p, conv1={"kernel": p["conv1"]["kernel"][..., perm]},
                          bn1={k: v[perm] for k, v in p["bn1"].items()},
                          conv2={"kernel": p["conv2"]["kernel"][:, :, perm, :]})}
    if "batch_stats" in variables:
        s = variables["batch_stats"]
        out["batch_stats"] = dict(s, bn1={k: v[perm] for k, v in s["bn1"].items()})
    return out


def _outgoing(kernel):
    """(kh, kw, H, O) -> (kh, kw, O, H): a kernel out of the hidden channels, the hidden
    axis last."""
    return jnp.swapaxes(kernel, 2, 3)


def canonical_simple(params):
    """A SimpleBlockNoBn's params with the hidden channels in :func:`hidden_order`
    (conv1 filter norm descending). Pure; ``jax.vmap`` it over a batch of blocks."""
    k1, k2 = params["conv1"]["kernel"], params["conv2"]["kernel"]
    return permute_simple(params, hidden_order(k1, (_outgoing(k2),)))


def canonical_basic(variables):
    """A BasicBlock's variables with the hidden channels in :func:`hidden_order` (conv1
    filter norm descending; ties: conv1, conv2, BN1 scale, bias, running mean, var). Pure;
    ``jax.vmap`` it over a batch of blocks."""
    p = variables["params"]
    rest = [_outgoing(p["conv2"]["kernel"]), p["bn1"]["scale"], p["bn1"]["bias"]]
    if "batch_stats" in variables:
        rest += [variables["batch_stats"]["bn1"]["mean"], variables["batch_stats"]["bn1"]["var"]]
    return permute_basic(variables, hidden_order(p["conv1"]["kernel"], rest))


# --------------------------------------------------------------------------- translator
class _MlpBlock(nn.Module):
    hidden: int
    out: int
    dropout: float

    @nn.compact
    def __call__(self, x, train: bool):
        x = _dense(self.hidden, x.shape[-1])(x)
        x = nn.Dropout(self.dropout, deterministic=not train)(nn.gelu(x, approximate=False))
        x = _dense(self.out, self.hidden)(x)
        return nn.Dropout(self.dropout, deterministic=not train)(x)


class MixerLayer(nn.Module):
    """Token mixing then channel mixing on (B, S, C); both LayerNorms act over C."""
    s_dim: int
    c_dim: int
    hidden_s_dim: int
    hidden_c_dim: int
    dropout: float

    @nn.compact
    def __call__(self, x, train: bool = False):
        y = nn.LayerNorm(epsilon=1e-5, name="token_norm")(x)
        y = _MlpBlock(self.hidden_s_dim, self.s_dim, self.dropout, name="token_mlp")(
            jnp.swapaxes(y, 1, 2), train)
        x = x + jnp.swapaxes(y, 1, 2)
        y = nn.LayerNorm(epsilon=1e-5, name="channel_norm")(x)
        return x + _MlpBlock(self.hidden_c_dim, self.c_dim, self.dropout,
                             name="channel_mlp")(y, train)


class MLPMixer(nn.Module):
    """The KT translator: BasicBlock tokens (B, 72, 9) -> SimpleBlockNoBn rows (B, 36, 9).

    ``map1`` Dense(9 -> c_dim), ``num_layers`` :class:`MixerLayer`, then LayerNorm, a
    token-axis MLP (s_dim -> hidden_s_dim -> s_dim / 2, GELU, no dropout) and ``map2``
    Dense(c_dim -> 9). With the defaults (24, 72, 128, 256, 512): 4,096,621 parameters.
    Split the output with :func:`simple_from_output`.
    """
    num_layers: int = 24
    s_dim: int = 72
    c_dim: int = 128
    hidden_s_dim: int = 256
    hidden_c_dim: int = 512
    dropout: float = 0.0

    @nn.compact
    def __call__(self, tokens, train: bool = False):
        if tokens.shape[1:] != (self.s_dim, 9):
            raise ValueError(f"tokens must have shape (B, {self.s_dim}, 9), got "
                             f"{tokens.shape}")
        x = _dense(self.c_dim, 9, name="map1")(tokens)
        for i in range(self.num_layers):
            x = MixerLayer(self.s_dim, self.c_dim, self.hidden_s_dim, self.hidden_c_dim,
                           self.dropout, name=f"layer_{i}")(x, train)
        x = jnp.swapaxes(nn.LayerNorm(epsilon=1e-5, name="norm")(x), 1, 2)
        x = nn.gelu(_dense(self.hidden_s_dim, self.s_dim, name="fc1")(x), approximate=False)
        x = jnp.swapaxes(_dense(self.s_dim // 2, self.hidden_s_dim, name="fc2")(x), 1, 2)
        return _dense(9, self.c_dim, name="map2")(x)


@functools.lru_cache(maxsize=8)
def mixer_param_count(num_layers=24, s_dim=72, c_dim=128, hidden_s_dim=256,
                      hidden_c_dim=512) -> int:
    """Parameter count of :class:`MLPMixer` from ``jax.eval_shape`` (no compute)."""
    m = MLPMixer(num_layers, s_dim, c_dim, hidden_s_dim, hidden_c_dim)
    shapes = jax.eval_shape(m.init, jax.random.PRNGKey(0), jnp.zeros((1, s_dim, 9)))
    return count_params(shapes["params"])
