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
        #    (infer() below is the fast form of this path for eval.)
        slot = torch.full((x.size(0),), -1, dtype=torch.long, device=x.device)
        slot[targets] = torch.arange(targets.numel(), device=x.device)
        into = slot[edge_index[1]]
        keep = into >= 0
        pairs = torch.stack([edge_index[0][keep], into[keep]])
        out = last_conv((x, x[targets]), pairs, edge_attr[keep])
        return x[targets] + self.dropout(last_norm(torch.nn.functional.gelu(out)))

    @torch.no_grad()
    def infer(self, x: Tensor, edge_index: Tensor, edge_type: Tensor, edge_weight: Tensor,
              batch: Tensor, targets: Tensor, chunk_pairs: int = 4096) -> Tensor:
        r"""Eval-mode states of ``targets``, window by window in dense form (fast path).

        The same values as ``forward(..., targets)`` (up to float rounding): the edges of
        each window are laid out on a dense ``(window, target, source)`` grid, the edge
        embedding is folded into a ``(NUM_EDGE_TYPES + 1, dim)`` table
        (:math:`W_e [E_{type} \| w] = T_{type} + w\,u`), the attention logits of a chunk
        of windows are computed in place (it stays in cache), and messages are aggregated
        with a batched matrix product instead of per-edge gathers and scatters. Edges
        never cross windows (``batch``).

        Args:
            x / edge_index / edge_type / edge_weight: As in :meth:`forward`.
            batch: Window of each node ``(N,)``, sorted.
            targets: One node per window, in window order ``(W,)``.
            chunk_pairs: (target, source) pairs per chunk of windows.

        Shapes:
            - output: ``(W, dim)``.
        """
        n = x.size(0)
        sizes = torch.bincount(batch)
        windows, longest = sizes.numel(), int(sizes.max())
        pos = torch.arange(n, device=x.device) - (torch.cumsum(sizes, 0) - sizes)[batch]
        # 1. Dense layout: node states (W, L, dim); edges as (one-hot type | weight) on the grid.
        dense = x.new_zeros(windows, longest, x.size(1))
        dense[batch, pos] = x
        src, dst = edge_index
        grid = (batch[dst], pos[dst], pos[src])
        kinds = x.new_zeros(windows, longest, longest, NUM_EDGE_TYPES + 1)
        kinds[(*grid, edge_type)] = 1.0
        kinds[(*grid, torch.full_like(edge_type, NUM_EDGE_TYPES))] = edge_weight
        mask = torch.zeros(windows, longest, longest, dtype=torch.bool, device=x.device)
        mask[grid] = True
        at = pos[targets]
        rows = torch.arange(windows, device=x.device)
        # 2. Every layer but the last for all nodes, the last into the targets only.
        for k, (conv, norm) in enumerate(zip(self.convs, self.norms, strict=True)):
            if k < self.num_layers - 1:
                out = self._dense_attention(conv, dense, dense, kinds, mask, chunk_pairs)
                dense = dense + norm(torch.nn.functional.gelu(out))
            else:
                query = dense[rows, at].unsqueeze(1)
                out = self._dense_attention(conv, query, dense, kinds[rows, at].unsqueeze(1),
                                            mask[rows, at].unsqueeze(1), chunk_pairs)
                return (query + norm(torch.nn.functional.gelu(out))).squeeze(1)
        raise AssertionError("SpeakerGAT has at least one layer")

    @torch.no_grad()
    def infer_dense(self, x: Tensor, source: Tensor, target: Tensor, kinds: Tensor,
                    mask: Tensor, at: Tensor, chunk_pairs: int = 2048) -> Tensor:
        r"""Eval-mode states of one target per window, from dense windows (fast path).

        What :meth:`infer` computes after its dense layout, with the first layer's
        ``lin_l`` / ``lin_r`` maps of ``x`` given (the caller may fold them into whatever
        produced ``x``, e.g. the projection before the graph).

        Args:
            x: Node states ``(W, L, dim)``.
            source / target: ``convs[0].lin_l(x)`` and ``convs[0].lin_r(x)`` ``(W, L, dim)``.
            kinds / mask: The dense edges (:func:`~cberl_model.window_graph.dense_window_edges`).
            at: Position of each window's target ``(W,)``.

        Shapes:
            - output: ``(W, dim)``.
        """
        rows = torch.arange(x.size(0), device=x.device)
        for k, (conv, norm) in enumerate(zip(self.convs, self.norms, strict=True)):
            last = k == self.num_layers - 1
            query = x[rows, at].unsqueeze(1) if last else x
            if last:  # the last layer only into the targets
                kinds, mask = kinds[rows, at].unsqueeze(1), mask[rows, at].unsqueeze(1)
            src = source if k == 0 else None
            tgt = None if k else (target[rows, at].unsqueeze(1) if last else target)
            out = self._dense_attention(conv, query, x, kinds, mask, chunk_pairs, src, tgt)
            x = query + norm(torch.nn.functional.gelu(out))
        return x.squeeze(1)

    def _dense_attention(self, conv: GATv2Conv, query: Tensor, keys: Tensor, kinds: Tensor,
                         mask: Tensor, chunk_pairs: int, source: Tensor | None = None,
                         target: Tensor | None = None) -> Tensor:
        """One GATv2 layer on dense windows: ``(W, Lq, dim)`` queries over ``(W, L, dim)``.

        ``source`` / ``target``: ``conv.lin_l(keys)`` / ``conv.lin_r(query)`` when known.
        """
        heads, channels = conv.heads, conv.out_channels
        windows, lq, lk = mask.shape
        source = conv.lin_l(keys) if source is None else source  # (W, L, H*C): x_j, the messages
        target = conv.lin_r(query) if target is None else target  # (W, Lq, H*C): x_i
        # Edge table: lin_edge([E_type | w]) = T[type] + w * u, one row per kind.
        weight = conv.lin_edge.weight  # (H*C, edge_type_dim + 1)
        table = torch.cat([self.edge_type.weight @ weight[:, :-1].T, weight[:, -1:].T])
        # Per-head attention vectors (1, H, C): logits by a broadcast product and a sum over
        # channels, one contiguous pass (a per-head strided bmm is several times slower).
        att = conv.att.view(1, heads, channels)
        lowest = torch.finfo(query.dtype).min
        # Messages head-major (W, H, L, C), outputs (W, H, Lq, C): aggregation is one bmm.
        values = source.reshape(windows, lk, heads, channels).transpose(1, 2).contiguous()
        out = target.new_empty(windows, heads, lq, channels)
        blocked = ~mask
        step = max(1, chunk_pairs // (lq * lk))
        for a in range(0, windows, step):
            b = min(windows, a + step)
            # logits = att . leaky_relu(x_i + x_j + e_ij), built in place
            pair = target[a:b].unsqueeze(2) + source[a:b].unsqueeze(1)  # (w, Lq, L, H*C)
            flat = pair.view(-1, heads * channels)
            flat.addmm_(kinds[a:b].reshape(-1, table.size(0)), table)
            torch.nn.functional.leaky_relu(flat, conv.negative_slope, inplace=True)
            logits = (flat.view(-1, heads, channels) * att).sum(-1)  # (P, H)
            logits = logits.view(b - a, lq, lk, heads).permute(0, 3, 1, 2)  # (w, H, Lq, L)
            logits = logits.masked_fill(blocked[a:b].unsqueeze(1), lowest)
            alpha = logits.softmax(dim=-1)  # over each target's sources
            torch.bmm(alpha.reshape(-1, lq, lk), values[a:b].view(-1, lk, channels),
                      out=out[a:b].view(-1, lq, channels))
        return out.transpose(1, 2).reshape(windows, lq, heads * channels) + conv.bias
