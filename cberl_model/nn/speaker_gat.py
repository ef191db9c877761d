"""Speaker-aware graph attention over the utterance nodes of a window."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch_geometric.nn import GATv2Conv

from cberl_model.window_graph import NUM_EDGE_TYPES


class SpeakerGAT(nn.Module):
    r"""Stacked GATv2 layers whose attention sees each edge's relation type and weight.

    Following CBERL's speaker-relation graph, the attention logit of edge :math:`j \to i`
    is computed from both node states and an edge embedding
    :math:`e_{ji} = [\,E_{\mathrm{type}(j,i)} \,\|\, w_{ji}\,]` (GATv2, Brody et al. 2022):

    .. math::
        \alpha_{ij} = \mathrm{softmax}_j\big(a^\top \mathrm{LeakyReLU}(W [h_i \| h_j \| e_{ji}])\big),
        \qquad h_i' = h_i + \mathrm{LN}\Big(\sum_j \alpha_{ij} W h_j\Big).

    Args:
        dim: Node state size (input and output).
        heads: Attention heads per layer (``dim`` must be divisible by it).
        num_layers: Stacked layers (each with a residual connection and LayerNorm).
        edge_type_dim: Size of the learned edge-type embedding.
        dropout: Dropout on attention coefficients and between layers.

    Shapes:
        - input: ``x`` ``(N, dim)``, ``edge_index`` ``(2, E)``, ``edge_type`` ``(E,)``,
          ``edge_weight`` ``(E,)``.
        - output: ``(N, dim)``.
    """

    def __init__(self, dim: int = 256, heads: int = 4, num_layers: int = 2,
                 edge_type_dim: int = 16, dropout: float = 0.2) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"SpeakerGAT dim ({dim}) must be divisible by heads ({heads}).")
        self.dim, self.heads, self.num_layers = dim, heads, num_layers
        self.edge_type = nn.Embedding(NUM_EDGE_TYPES, edge_type_dim)
        self.convs = nn.ModuleList(
            GATv2Conv(dim, dim // heads, heads=heads, edge_dim=edge_type_dim + 1,
                      add_self_loops=False, dropout=dropout)
            for _ in range(num_layers))
        self.norms = nn.ModuleList(nn.LayerNorm(dim) for _ in range(num_layers))
        self.dropout = nn.Dropout(dropout)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.edge_type.reset_parameters()
        for conv, norm in zip(self.convs, self.norms, strict=True):
            conv.reset_parameters()
            norm.reset_parameters()

    def __repr__(self) -> str:
        return (f"{self.__class__.__name__}({self.dim}, heads={self.heads}, "
                f"num_layers={self.num_layers})")

    def forward(self, x: Tensor, edge_index: Tensor, edge_type: Tensor,
                edge_weight: Tensor, targets: Tensor | None = None) -> Tensor:
        """Node states after the attention layers.

        With ``targets`` (distinct node indices ``(B,)``) only their states are returned,
        ``(B, dim)``: the last layer then runs on the edges into them alone (a bipartite
        GATv2 step, same weights), which is all inference needs and gives the same values.
        """
        # 1. Edge features: learned relation embedding plus the distance weight.
        edge_attr = torch.cat([self.edge_type(edge_type), edge_weight.unsqueeze(-1)], dim=-1)
        layers = list(zip(self.convs, self.norms, strict=True))
        if targets is not None:
            layers, (last_conv, last_norm) = layers[:-1], layers[-1]
        # 2. Residual attention layers.
        for conv, norm in layers:
            x = x + self.dropout(norm(torch.nn.functional.gelu(conv(x, edge_index, edge_attr))))
        if targets is None:
            return x
        # 3. The last layer only into the targets: keep their incoming edges, renumbered.
        slot = torch.full((x.size(0),), -1, dtype=torch.long, device=x.device)
        slot[targets] = torch.arange(targets.numel(), device=x.device)
        into = slot[edge_index[1]]
        keep = into >= 0
        pairs = torch.stack([edge_index[0][keep], into[keep]])
        out = last_conv((x, x[targets]), pairs, edge_attr[keep])
        return x[targets] + self.dropout(last_norm(torch.nn.functional.gelu(out)))
