"""GCN, GAT and GraphSAGE as Flax Linen modules over ``jraph.GraphsTuple``.

Every model maps ``(graph, x)`` to ``(logits (N, C), hidden (N, D))``: ``x`` is the (N, F)
node input (dense or :class:`jaxgraph.graphs.SparseFeatures`; usually ``graph.nodes``) and
``hidden`` the last hidden representation that OAD's discriminators judge (graph.md §5.1).
Message passing lives in :mod:`jaxgraph.graphs` (segment sums with static sizes); the
models never import jraph.

Defaults follow the original papers (Kipf GCN, Velickovic GAT, Hamilton GraphSAGE-mean);
the OAD reference code's variants are switches (``dropout=0`` for its GCN,
``activation="relu"`` and ``out_heads=8`` for its GAT; self-loops are a property of the
graph, see :func:`jaxgraph.graphs.build_graph`).
"""
from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from jaxgraph import graphs

__all__ = ["GCNConv", "GATConv", "SAGEConv", "GCN", "GAT", "SAGE", "make_model", "ARCHS",
           "input_dim"]

ARCHS = ("gcn", "gat", "sage")
_ACTIVATIONS = {"relu": nn.relu, "elu": nn.elu}


def input_dim(x) -> int:
    """Feature count F of a dense (N, F) array or SparseFeatures."""
    return int(x.shape[-1])


class GCNConv(nn.Module):
    """out = b + D_out^-1/2 A D_in^-1/2 (x W): DGL ``GraphConv(norm='both')``.

    Attributes:
      features: output width.
    """
    features: int
    use_bias: bool = True

    @nn.compact
    def __call__(self, graph, x):
        kernel = self.param("kernel", nn.initializers.glorot_uniform(),
                            (input_dim(x), self.features))
        h = graphs.gcn_aggregate(graph, graphs.linear(x, kernel))
        if self.use_bias:
            h = h + self.param("bias", nn.initializers.zeros, (self.features,))
        return h


class GATConv(nn.Module):
    """Multi-head graph attention (DGL ``GATConv``): per head k,
    out_i^k = b^k + sum_{j -> i} alpha_ij^k W^k x_j with alpha = softmax_j LeakyReLU(
    a_l^k . W^k x_j + a_r^k . W^k x_i); dropout on the input (``feat_drop``) and on alpha.

    Returns (N, heads, features).
    """
    features: int
    heads: int
    feat_drop: float = 0.0
    attn_drop: float = 0.0
    negative_slope: float = 0.2

    @nn.compact
    def __call__(self, graph, x, deterministic: bool = True):
        init = nn.initializers.glorot_uniform()
        if not deterministic and self.feat_drop > 0:
            x = graphs.feature_dropout(x, self.feat_drop, self.make_rng("dropout"), False)
        kernel = self.param("kernel", init, (input_dim(x), self.heads * self.features))
        h = graphs.linear(x, kernel).reshape(-1, self.heads, self.features)
        a_l = self.param("attn_l", init, (1, self.heads, self.features))
        a_r = self.param("attn_r", init, (1, self.heads, self.features))
        rng = None if deterministic or self.attn_drop == 0 else self.make_rng("dropout")
        out = graphs.attention_aggregate(
            graph, h, jnp.sum(h * a_l, -1), jnp.sum(h * a_r, -1),
            negative_slope=self.negative_slope, attn_dropout=self.attn_drop, rng=rng,
            deterministic=deterministic)
        return out + self.param("bias", nn.initializers.zeros, (self.heads, self.features))


class SAGEConv(nn.Module):
    """GraphSAGE-mean (DGL ``SAGEConv('mean')``): out_i = W_s x_i + W_n mean_{j->i} x_j + b."""
    features: int

    @nn.compact
    def __call__(self, graph, x):
        init = nn.initializers.glorot_uniform()
        w_self = self.param("kernel_self", init, (input_dim(x), self.features))
        w_neigh = self.param("kernel_neigh", init, (input_dim(x), self.features))
        h_self = graphs.linear(x, w_self)
        h_neigh = graphs.mean_aggregate(graph, graphs.linear(x, w_neigh))
        return h_self + h_neigh + self.param("bias", nn.initializers.zeros, (self.features,))


def _input_dropout(module: nn.Module, x, rate: float, deterministic: bool):
    """Dropout on the (dense or sparse) input features when training."""
    if deterministic or rate <= 0:
        return x
    return graphs.feature_dropout(x, rate, module.make_rng("dropout"), False)


class GCN(nn.Module):
    """Two-layer GCN: H = GCNConv(hidden)(drop(x)); logits = GCNConv(C)(drop(ReLU(H))).

    ``hidden`` returned is H *before* the ReLU, as the OAD reference code feeds it to its
    discriminator. ``dropout`` 0.5 is Kipf's recipe; the OAD code uses 0.
    """
    num_classes: int
    hidden: int = 16
    dropout: float = 0.5

    @nn.compact
    def __call__(self, graph, x, deterministic: bool = True):
        drop = nn.Dropout(self.dropout, deterministic=deterministic)
        x = _input_dropout(self, x, self.dropout, deterministic)
        h = GCNConv(self.hidden)(graph, x)
        logits = GCNConv(self.num_classes)(graph, drop(nn.relu(h)))
        return logits, h


class GAT(nn.Module):
    """Two-layer GAT: H = flatten(act(GATConv(hidden, heads)(x))) (N, heads*hidden);
    logits = mean over ``out_heads`` of GATConv(C, out_heads)(H).

    Paper (Velickovic et al.): ``activation="elu"``, ``out_heads=1``; OAD code: ``"relu"``,
    ``out_heads=8``. Dropout ``feat_drop`` on each layer's input, ``attn_drop`` on alpha.
    """
    num_classes: int
    hidden: int = 8
    heads: int = 8
    out_heads: int = 1
    activation: str = "elu"
    feat_drop: float = 0.6
    attn_drop: float = 0.6

    @nn.compact
    def __call__(self, graph, x, deterministic: bool = True):
        act = _ACTIVATIONS[self.activation]
        h = GATConv(self.hidden, self.heads, self.feat_drop, self.attn_drop)(
            graph, x, deterministic)
        h = act(h).reshape(h.shape[0], self.heads * self.hidden)
        out = GATConv(self.num_classes, self.out_heads, self.feat_drop, self.attn_drop)(
            graph, h, deterministic)
        return out.mean(axis=1), h


class SAGE(nn.Module):
    """Two-layer GraphSAGE-mean: H = drop(ReLU(SAGEConv(hidden)(drop(x))));
    logits = SAGEConv(C)(H). ``hidden`` returned is H (post-activation, post-dropout)."""
    num_classes: int
    hidden: int = 16
    dropout: float = 0.5

    @nn.compact
    def __call__(self, graph, x, deterministic: bool = True):
        drop = nn.Dropout(self.dropout, deterministic=deterministic)
        x = _input_dropout(self, x, self.dropout, deterministic)
        h = drop(nn.relu(SAGEConv(self.hidden)(graph, x)))
        return SAGEConv(self.num_classes)(graph, h), h


def make_model(arch: str, num_classes: int, **kwargs) -> nn.Module:
    """``GCN`` / ``GAT`` / ``SAGE`` by name, with keyword overrides of its attributes.

    Raises ValueError naming the bad ``arch`` or keyword and the accepted ones.
    """
    classes = {"gcn": GCN, "gat": GAT, "sage": SAGE}
    cls = classes.get(str(arch).lower())
    if cls is None:
        raise ValueError(f"unknown GNN architecture {arch!r}; valid: {', '.join(ARCHS)}")
    fields = {f for f in cls.__dataclass_fields__ if f not in ("parent", "name",
                                                                "num_classes")}
    bad = set(kwargs) - fields
    if bad:
        raise ValueError(f"unknown {cls.__name__} option(s) {sorted(bad)}; valid: "
                         f"{sorted(fields)}")
    if cls is GAT and kwargs.get("activation", "elu") not in _ACTIVATIONS:
        raise ValueError(f"unknown GAT activation {kwargs['activation']!r}; valid: "
                         f"{sorted(_ACTIVATIONS)}")
    return cls(num_classes=num_classes, **kwargs)


def hidden_dim(model: nn.Module) -> int:
    """Width D of the ``hidden`` output of a model from :func:`make_model`."""
    if isinstance(model, GAT):
        return model.heads * model.hidden
    return model.hidden
