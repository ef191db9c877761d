"""The CBERL network: DJVAE fusion -> Bi-LSTM -> speaker GAT -> weak-classifier ensemble."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from cberl_model.nn.concat_fusion import ConcatFusion
from cberl_model.nn.context_lstm import ContextLSTM
from cberl_model.nn.djvae import DJVAEFusion, FusionOutput
from cberl_model.nn.ensemble import WeakClassifierEnsemble
from cberl_model.nn.inference_cache import cached
from cberl_model.nn.masked_reconstruction import MaskedReconstruction
from cberl_model.nn.speaker_gat import SpeakerGAT
from cberl_model.window_graph import dense_window_edges
from cberl_model.windows import WindowBatch

FUSIONS = ("djvae", "concat")


@dataclass
class CBERLConfig:
    """Architecture hyper-parameters (stored in the model artifact's ``config.json``).

    ``fusion`` (``"djvae"`` or ``"concat"``) and ``use_graph`` exist for the ablation
    (``benchmarks/ablation.py``); their defaults are the full network, so artifacts saved
    before they existed build the same network.
    """

    input_dims: dict[str, int]
    num_classes: int
    past: int = 10
    future: int = 2
    edge_decay: float = 4.0
    latent_dim: int = 256
    fusion_hidden: int = 384
    lstm_hidden: int = 128
    gat_heads: int = 4
    gat_layers: int = 2
    edge_type_dim: int = 16
    dropout: float = 0.3
    ensemble_members: int = 5
    ensemble_hidden: int = 128
    ensemble_subspace: float = 0.75
    mask_rate: float = 0.15
    target_mask_rate: float = 0.0
    ensemble_seed: int = 0
    fusion: str = "djvae"
    use_graph: bool = True
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class _Standardize(nn.Module):
    """Fixed per-dimension standardisation, fitted on the training split."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        return (x - self.mean) / self.std


@dataclass
class CBERLOutput:
    """Everything the objectives need from one forward pass."""

    logits: Tensor
    fusion: FusionOutput
    context: Tensor
    mask: Tensor
    inputs: dict[str, Tensor]


class CBERL(nn.Module):
    r"""Class Boundary Enhanced Representation Learning for emotion in conversation.

    Paper: "Deep Imbalanced Learning for Multimodal Emotion Recognition in Conversations"
    (arXiv 2312.06337). Per node (utterance) of a window:

    .. math::
        z_i = \mathrm{DJVAE}(x_i^{t}, x_i^{a}, x_i^{v}), \quad
        c_i = \mathrm{BiLSTM}(z)_i, \quad
        g_i = \mathrm{GAT}(W[z_i \| c_i], \mathcal E_{\mathrm{speaker}})_i, \quad
        \hat p_i = \tfrac1K \textstyle\sum_k \mathrm{softmax}(f_k([z_i \| g_i]))

    trained with focal loss on the window's target node, masked-node reconstruction and the
    DJVAE objective (see :mod:`cberl_model.train.loop`).

    Args:
        config: Architecture hyper-parameters, see :class:`CBERLConfig`.

    Shapes:
        - input: :class:`~cberl_model.windows.WindowBatch` with ``B`` windows, ``N`` nodes.
        - output: :class:`CBERLOutput`, ``logits`` of shape ``(K, B, num_classes)``.
    """

    def __init__(self, config: CBERLConfig) -> None:
        super().__init__()
        self.config = config
        self.modalities = tuple(config.input_dims)
        self.standardize = nn.ModuleDict({m: _Standardize(d) for m, d in config.input_dims.items()})
        if config.fusion not in FUSIONS:
            raise ValueError(f"CBERL fusion must be one of {', '.join(FUSIONS)}, got {config.fusion!r}.")
        self.fusion: DJVAEFusion | ConcatFusion = (
            DJVAEFusion(config.input_dims, config.latent_dim, config.fusion_hidden, config.dropout)
            if config.fusion == "djvae" else
            ConcatFusion(config.input_dims, config.latent_dim, config.dropout))
        self.reconstruction = MaskedReconstruction(config.latent_dim, 2 * config.latent_dim,
                                                   config.input_dims, config.mask_rate,
                                                   config.target_mask_rate)
        self.context = ContextLSTM(config.latent_dim, config.lstm_hidden, dropout=config.dropout)
        self.project = nn.Linear(config.latent_dim + 2 * config.lstm_hidden, 2 * config.latent_dim)
        # Without the graph (ablation) the projected Bi-LSTM state is the context.
        self.graph = (SpeakerGAT(2 * config.latent_dim, config.gat_heads, config.gat_layers,
                                 config.edge_type_dim, config.dropout)
                      if config.use_graph else None)
        self.classifier = WeakClassifierEnsemble(
            3 * config.latent_dim, config.num_classes, config.ensemble_members,
            config.ensemble_hidden, config.ensemble_subspace, config.dropout, config.ensemble_seed)

    def __repr__(self) -> str:
        c = self.config
        return (f"{self.__class__.__name__}(modalities={list(self.modalities)}, "
                f"classes={c.num_classes}, past={c.past}, future={c.future})")

    def fit_standardization(self, features: dict[str, Tensor], present: dict[str, Tensor]) -> None:
        """Set the input standardisation from training features (present rows only)."""
        for m, module in self.standardize.items():
            rows = features[m][present[m]]
            if len(rows) > 1:
                module.mean.copy_(rows.mean(0))
                module.std.copy_(rows.std(0).clamp(min=1e-4))

    def forward(self, batch: WindowBatch) -> CBERLOutput:
        # 1. Standardise and fuse whichever modalities each node has.
        inputs = {m: self.standardize[m](batch.features[m]) for m in self.modalities}
        fusion = self.fusion(inputs, batch.present)
        # 2. Hide random nodes (training only); targets at their own, lower rate.
        z, mask = self.reconstruction.mask(fusion.z, batch.is_target)
        # 3. Sequential context within each window, then speaker-typed graph attention.
        sequence = self.context(z, batch.batch)
        context = self.project(torch.cat([z, sequence], -1))
        if self.graph is not None:
            context = self.graph(context, batch.edge_index, batch.edge_type, batch.edge_weight)
        # 4. The ensemble classifies each window's target node.
        target = batch.target
        logits = self.classifier(torch.cat([z[target], context[target]], -1))
        return CBERLOutput(logits=logits, fusion=fusion, context=context, mask=mask, inputs=inputs)

    @torch.no_grad()
    def predict_proba(self, batch: WindowBatch) -> Tensor:
        """Class probabilities of each window's target, ``(B, num_classes)``, in eval mode.

        The same network as :meth:`forward` without what only training needs: no masking,
        and the graph's last layer runs into the targets alone (the other nodes' final
        states are never classified), so a window costs one attention row at the top.
        """
        was_training = self.training
        self.eval()
        try:
            # 1. Fusion, sequential context and projection, as in forward (eval: no mask).
            inputs = {m: self.standardize[m](batch.features[m]) for m in self.modalities}
            z = self.fusion(inputs, batch.present).z
            context = self.project(torch.cat([z, self.context(z, batch.batch)], -1))
            # 2. Graph attention up to the targets, then the ensemble on them.
            target = batch.target
            top = (context[target] if self.graph is None else
                   self.graph.infer(context, batch.edge_index, batch.edge_type, batch.edge_weight,
                                    batch.batch, target))
            logits = self.classifier(torch.cat([z[target], top], -1))
        finally:
            self.train(was_training)
        return WeakClassifierEnsemble.probabilities(logits)

    @torch.no_grad()
    def predict_spans(self, features: dict[str, Tensor], present: dict[str, Tensor],
                      speakers: Tensor, starts: Tensor, ends: Tensor, targets: Tensor) -> Tensor:
        """:meth:`predict_proba` of windows given as spans of one node table (fast path).

        The same values (up to float rounding, tested within 1e-5) as ``predict_proba`` of
        :meth:`WindowBatch.from_spans` of the same spans, with the work shared between the
        windows that share nodes (a live call's ``future + 1`` windows share all but a few):

        * fusion, the LSTM input projection and the projection's ``z`` part run once per
          table row instead of once per window node;
        * the Bi-LSTM runs once per distinct window start (forward) and end (backward),
          see :meth:`~cberl_model.nn.ContextLSTM.infer_spans`;
        * the projection is folded into the first graph layer's ``lin_l`` / ``lin_r``
          (one ``(3 * dim)``-wide map), applied to the shared rows before gathering;
        * the graph is built directly in dense form and the ensemble runs batched.

        Args:
            features / present: The node table per modality, ``(U, d)`` and ``(U,)``.
            speakers: Speaker id of each row ``(U,)``.
            starts / ends / targets: Each window's bounds and target row ``(W,)``.

        Returns:
            Class probabilities ``(W, num_classes)``.
        """
        config = self.config
        if self.graph is None or self.context.num_layers != 1 or not starts.numel():
            labels = torch.full_like(speakers, -1)
            batch = WindowBatch.from_spans(features, present, speakers, starts, ends, targets,
                                           labels, config.past, config.future, config.edge_decay)
            return self.predict_proba(batch)
        was_training = self.training
        self.eval()
        try:
            # 1. Per table row: fusion.
            inputs = {m: self.standardize[m](features[m]) for m in self.modalities}
            z = self.fusion(inputs, present).z  # (U, latent)
            # 2. Bi-LSTM, shared between windows with the same start / end.
            forward, index_f, backward, index_b = self.context.infer_spans(z, starts, ends)
            # 3. Projection folded into graph layer 0's lin_l / lin_r: [ctx | x_j | x_i].
            latent, hidden = z.size(1), self.context.hidden_dim
            map_z, map_f, map_b, shift = self._folded_projection(latent, hidden)
            dim = self.project.weight.size(0)
            sizes = ends - starts
            longest = int(sizes.max())
            pos = torch.arange(longest, device=z.device)
            node = (starts.view(-1, 1) + pos).clamp_(max=z.size(0) - 1)  # (W, L) table rows
            # Row gathers by index_select (advanced indexing is several times slower on
            # CPU); the forward states are gathered narrow and mapped in place, since
            # every live window has its own start and mapping first would share nothing.
            mapped = torch.addmm(shift, z, map_z).index_select(0, node.view(-1))
            mapped += (backward @ map_b).index_select(0, index_b.reshape(-1))
            mapped.addmm_(forward.index_select(0, index_f.reshape(-1)), map_f)
            mapped = mapped.view(*node.shape, -1)
            context, source, target = mapped[..., :dim], mapped[..., dim:2 * dim], mapped[..., 2 * dim:]
            # 4. Dense speaker graph, attention up to the targets, ensemble.
            kinds, mask = dense_window_edges(sizes, speakers[node], config.past, config.future,
                                             config.edge_decay)
            top = self.graph.infer_dense(context, source, target, kinds, mask, targets - starts)
            logits = self.classifier.infer(torch.cat([z[targets], top], -1))
        finally:
            self.train(was_training)
        return WeakClassifierEnsemble.probabilities(logits)

    def _folded_projection(self, latent: int, hidden: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``[project | lin_l . project | lin_r . project]`` of graph layer 0, split by input.

        Returns the transposed maps of the ``z``, forward-LSTM and backward-LSTM inputs
        (``(in, 3 * dim)`` each, contiguous) and the folded bias ``(3 * dim,)``.
        """
        assert self.graph is not None
        conv = self.graph.convs[0]
        params = (self.project.weight, self.project.bias, conv.lin_l.weight, conv.lin_l.bias,
                  conv.lin_r.weight, conv.lin_r.bias)

        def build() -> tuple[Tensor, Tensor, Tensor, Tensor]:
            with torch.no_grad():
                weight, bias = self.project.weight, self.project.bias
                maps = torch.cat([weight, conv.lin_l.weight @ weight, conv.lin_r.weight @ weight]).T
                shift = torch.cat([bias, torch.addmv(conv.lin_l.bias, conv.lin_l.weight, bias),
                                   torch.addmv(conv.lin_r.bias, conv.lin_r.weight, bias)])
                return (maps[:latent].contiguous(), maps[latent:latent + hidden].contiguous(),
                        maps[latent + hidden:].contiguous(), shift)

        return cached(self, "folded_projection", params, build)
