"""Bi-directional LSTM over the utterances of each context window."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence
from torch_geometric.utils import to_dense_batch

from cberl_model.nn.inference_cache import cached


class ContextLSTM(nn.Module):
    r"""Sequential context: a Bi-LSTM run separately over every window of a batch.

    Windows arrive flattened (PyG style, a ``batch`` vector saying which window a node
    belongs to); they are padded, packed so padding never leaks into the recurrence, and
    flattened back, so a window's output depends on that window alone (what makes
    incremental and batch inference agree).

    Args:
        input_dim: Node feature size.
        hidden_dim: LSTM hidden size per direction (output is ``2 * hidden_dim``).
        num_layers: Stacked LSTM layers.
        dropout: Dropout between layers and on the output.

    Shapes:
        - input: ``x`` ``(N, input_dim)``, ``batch`` ``(N,)`` sorted window index.
        - output: ``(N, 2 * hidden_dim)``.
    """

    def __init__(self, input_dim: int, hidden_dim: int = 128, num_layers: int = 1,
                 dropout: float = 0.2) -> None:
        super().__init__()
        self.input_dim, self.hidden_dim, self.num_layers = input_dim, hidden_dim, num_layers
        self.lstm = nn.LSTM(input_dim, hidden_dim, num_layers=num_layers, batch_first=True,
                            bidirectional=True, dropout=dropout if num_layers > 1 else 0.0)
        self.dropout = nn.Dropout(dropout)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.lstm.reset_parameters()

    def __repr__(self) -> str:
        return (f"{self.__class__.__name__}({self.input_dim}, {2 * self.hidden_dim}, "
                f"num_layers={self.num_layers})")

    def forward(self, x: Tensor, batch: Tensor) -> Tensor:
        # 1. Flat nodes -> padded (windows, max_len, dim) plus the validity mask.
        dense, mask = to_dense_batch(x, batch)
        lengths = mask.sum(1).cpu()
        # 2. Packed recurrence: padding positions never enter either direction.
        packed = pack_padded_sequence(dense, lengths, batch_first=True, enforce_sorted=False)
        out, _ = self.lstm(packed)
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=dense.size(1))
        # 3. Back to flat node order.
        return self.dropout(out[mask])

    @torch.no_grad()
    def infer_spans(self, x: Tensor, starts: Tensor, ends: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        r"""Eval-mode Bi-LSTM outputs of windows given as spans ``[starts[w], ends[w])`` of ``x``.

        The same values as :meth:`forward` on the windows (up to float rounding) with the
        work shared between windows: the input projection runs once per row of ``x``, the
        forward direction once per distinct start (its state at a row depends only on the
        window's start), the backward direction once per distinct end. A live call's
        ``future + 1`` windows all end at the newest utterance, so they share one backward
        pass. Both directions run in one time loop of fused LSTM cells.

        Args:
            x: Node table ``(U, input_dim)``.
            starts / ends: Window bounds in rows of ``x`` ``(W,)``, ``ends > starts``.

        Returns:
            ``forward`` ``(L * Sf, hidden)`` (every step of every forward sequence),
            ``index_f`` ``(W, L)`` (the row of ``forward`` holding window ``w``'s output at
            its position ``p``), and ``backward`` / ``index_b`` likewise (``L`` the longest
            window; positions ``p >= ends[w] - starts[w]`` point at finite filler). Gather
            after any linear map of the states: the shared rows are mapped once.
        """
        if self.num_layers != 1:
            raise NotImplementedError("infer_spans supports one LSTM layer")
        lstm, hidden = self.lstm, self.hidden_dim
        device = x.device
        sizes = ends - starts
        longest = int(sizes.max())
        # 1. Input projections of every row, both directions, biases folded in.
        w_ih, b, whh_f, whh_b = cached(self, "stacked", list(lstm.parameters()), self._stacked)
        gates_x = torch.addmm(b, x, w_ih)  # (U, 8 * hidden)
        gx_f, gx_b = gates_x[:, :4 * hidden], gates_x[:, 4 * hidden:]
        # 2. One forward sequence per distinct start, one backward per distinct end.
        first, on_first = torch.unique(starts, return_inverse=True)
        last, on_last = torch.unique(ends, return_inverse=True)
        sf, sb = int(first.numel()), int(last.numel())
        steps = torch.arange(longest, device=device)
        top = x.size(0) - 1
        rows_f = (first.view(-1, 1) + steps).clamp_(max=top).T.contiguous()  # (L, Sf)
        rows_b = (last.view(-1, 1) - 1 - steps).clamp_(min=0).T.contiguous()  # (L, Sb)
        h_f = x.new_zeros(sf, hidden)
        h_b = x.new_zeros(sb, hidden)
        c = x.new_zeros(sf + sb, hidden)
        out = x.new_empty(longest, sf + sb, hidden)
        for t in range(longest):
            gates = torch.cat([torch.addmm(gx_f.index_select(0, rows_f[t]), h_f, whh_f),
                               torch.addmm(gx_b.index_select(0, rows_b[t]), h_b, whh_b)])
            i, f, g, o = gates.chunk(4, 1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(c)
            out[t] = h
            h_f, h_b = h[:sf], h[sf:]
        # 3. Each window's positions: forward step p of its start, backward step L_w-1-p of its end.
        pos = steps.view(1, -1)
        index_f = pos * sf + on_first.view(-1, 1)
        index_b = (sizes.view(-1, 1) - 1 - pos).clamp_(min=0) * sb + on_last.view(-1, 1)
        return (out[:, :sf].reshape(-1, hidden), index_f,
                out[:, sf:].reshape(-1, hidden), index_b)

    def _stacked(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Both directions' input maps ``(in, 8 * hidden)``, summed biases, recurrent maps."""
        lstm = self.lstm
        with torch.no_grad():
            w_ih = torch.cat([lstm.weight_ih_l0, lstm.weight_ih_l0_reverse]).T.contiguous()
            b = torch.cat([lstm.bias_ih_l0 + lstm.bias_hh_l0,
                           lstm.bias_ih_l0_reverse + lstm.bias_hh_l0_reverse])
            return (w_ih, b, lstm.weight_hh_l0.T.contiguous(),
                    lstm.weight_hh_l0_reverse.T.contiguous())
