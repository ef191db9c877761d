"""Bi-directional LSTM over the utterances of each context window."""

from __future__ import annotations

from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence
from torch_geometric.utils import to_dense_batch


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
