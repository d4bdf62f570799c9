r"""A residual MLP score network for vectors (2-D toys up to a few hundred dimensions).

.. math::
    h_0 = W_{in} x,\qquad
    h_{l+1} = h_l + W_l^{(2)}\,\mathrm{SiLU}\big(W_l^{(1)}\,\mathrm{SiLU}(h_l) + E_l\,e(c)\big),\qquad
    \text{out} = W_{out}\,\mathrm{SiLU}(h_L),

with :math:`e(c)` a time embedding of the conditioning scalar ``c`` (see
:mod:`scoresde.models.embeddings`); a class-conditional MLP (``num_classes=K``) uses
:math:`e(c) + E_y` instead, :math:`E_y` the learned vector of label :math:`y` (row :math:`K`: the
null class, for ``y=None``), and one built with ``guidance_range`` adds the guidance features
:math:`G(w)` too. The output layer starts at zero, so an untrained network
outputs 0 (for the ``eps`` parameterisation: the score of a standard normal at large t).
"""

from __future__ import annotations

from torch import Tensor, nn

from ..errors import ArgumentError, check_int, check_optional_int
from .embeddings import ClassEmbedding, Conditioned, make_embedding


class MLP(Conditioned, nn.Module):
    """Residual MLP ``net(x, c) -> (batch, dim)`` for inputs of shape ``(batch, dim)``.

    Args:
        dim: data dimension.
        hidden: width of the hidden layers.
        depth: number of residual blocks.
        embedding: ``"fourier"`` or ``"sinusoidal"`` time embedding.
        embedding_dim: size of the time features.
        embedding_scale: frequency scale of the embedding (None: its default).
        out_dim: output size (default ``dim``).
        num_classes: :math:`K` for a class-conditional network ``net(x, c, y)`` (labels in
            ``[0, K)``, ``K`` or ``y=None`` the null class); None (default): ``net(x, c)`` only.
        guidance_range: ``(w_min, w_max)`` for a network that also takes the guidance weight,
            ``net(x, c, y, w=weights)`` (a guidance-distilled student, see
            :mod:`scoresde.models.embeddings`); None (default): no weight input.
    """

    def __init__(
        self,
        dim: int,
        hidden: int = 256,
        depth: int = 3,
        *,
        embedding: str = "fourier",
        embedding_dim: int = 64,
        embedding_scale: float | None = None,
        out_dim: int | None = None,
        num_classes: int | None = None,
        guidance_range: tuple[float, float] | None = None,
    ):
        super().__init__()
        self.dim = check_int("dim", dim, 1)
        check_int("hidden", hidden, 1)
        check_int("depth", depth, 1)
        out_dim = dim if out_dim is None else check_int("out_dim", out_dim, 1)
        self.config = dict(
            dim=dim, hidden=hidden, depth=depth, embedding=embedding, embedding_dim=embedding_dim,
            embedding_scale=embedding_scale, out_dim=out_dim,
        )
        self.num_classes = check_optional_int("num_classes", num_classes)
        if self.num_classes is not None:  # recorded only when set: unconditional specs stay as they were
            self.config["num_classes"] = self.num_classes
        self.embed = nn.Sequential(
            make_embedding(embedding, embedding_dim, embedding_scale),
            nn.Linear(embedding_dim, hidden),
            nn.SiLU(),
        )
        self.inp = nn.Linear(dim, hidden)
        self.blocks = nn.ModuleList()
        for _ in range(depth):
            block = nn.ModuleDict(
                {"fc1": nn.Linear(hidden, hidden), "temb": nn.Linear(hidden, hidden), "fc2": nn.Linear(hidden, hidden)}
            )
            self.blocks.append(block)
        self.out = nn.Linear(hidden, out_dim)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)
        self.act = nn.SiLU()
        if self.num_classes is not None:  # built last: the other layers draw the same initial weights
            self.class_embed = ClassEmbedding(self.num_classes, hidden)
        self.cond_dim, self.guidance_range = hidden, None
        if guidance_range is not None:
            self.add_guidance_input(guidance_range)

    def forward(self, x: Tensor, c: Tensor, y: Tensor | None = None, w: Tensor | None = None) -> Tensor:
        if x.dim() != 2 or x.shape[1] != self.dim:
            raise ArgumentError(f"MLP(dim={self.dim}) expects x of shape (batch, {self.dim}), got {tuple(x.shape)}")
        if c.shape != (x.shape[0],):
            raise ArgumentError(f"c must have shape ({x.shape[0]},), got {tuple(c.shape)}")
        e = self.conditioned(self.embed(c), y, w)
        h = self.inp(x)
        for b in self.blocks:
            h = h + b["fc2"](self.act(b["fc1"](self.act(h)) + b["temb"](e)))
        return self.out(self.act(h))
