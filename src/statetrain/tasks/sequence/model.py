"""The sequence task's model: the frequency task's stateful LSTM with K outputs and its
normalisation inside.

`SequenceLSTM` is a `FrequencyLSTM` (so the native engine, the reference loop and window
training all take it) whose head is Linear(hidden, K): K regression targets, or K class
logits. The training split's per-column means and standard deviations are buffers of the
module: they are saved in every checkpoint with the weights, so a model loaded for
`statetrain predict` normalises a new file exactly as in training. `forward` itself works in
normalised units (what both engines train on); `normalise_inputs`/`denormalise` convert.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..frequency.model import FrequencyLSTM, State


class SequenceLSTM(FrequencyLSTM):
    """LSTM(inputs → hidden, layers) + Linear(hidden → outputs), state carried by the caller.

    ``forward(x (B, L, inputs), state)`` returns ``(out (B, L, outputs), state)``.
    """

    def __init__(
        self,
        input_size: int = 1,
        hidden_size: int = 64,
        num_layers: int = 1,
        output_size: int = 1,
        forget_bias: float = 0.0,
    ) -> None:
        super().__init__(input_size, hidden_size, num_layers, forget_bias)
        self.output_size = output_size
        self.fc = nn.Linear(hidden_size, output_size)
        self.register_buffer("in_mean", torch.zeros(input_size, dtype=torch.float64))
        self.register_buffer("in_std", torch.ones(input_size, dtype=torch.float64))
        self.register_buffer("out_mean", torch.zeros(output_size, dtype=torch.float64))
        self.register_buffer("out_std", torch.ones(output_size, dtype=torch.float64))

    def forward(self, x: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        if x.dim() == 2:
            x = x.unsqueeze(1)
        if state is None:
            state = self.init_hidden(x.shape[0], x.device)
        seq, state = self.lstm(x, state)
        return self.fc(seq), state

    def set_normalisation(self, norm) -> None:
        """Store the training split's statistics (a data.Normaliser) in the buffers."""
        with torch.no_grad():
            self.in_mean.copy_(torch.as_tensor(norm.in_mean, dtype=torch.float64))
            self.in_std.copy_(torch.as_tensor(norm.in_std, dtype=torch.float64))
            if len(norm.out_mean) == self.output_size:
                self.out_mean.copy_(torch.as_tensor(norm.out_mean, dtype=torch.float64))
                self.out_std.copy_(torch.as_tensor(norm.out_std, dtype=torch.float64))

    def normalise_inputs(self, x: np.ndarray) -> np.ndarray:
        """Raw inputs (N, inputs) → the float32 units the model was trained in."""
        mean = self.in_mean.detach().cpu().numpy()
        std = self.in_std.detach().cpu().numpy()
        return np.ascontiguousarray((x - mean) / std, dtype=np.float32)

    def normalise_targets(self, y: np.ndarray) -> np.ndarray:
        mean = self.out_mean.detach().cpu().numpy()
        std = self.out_std.detach().cpu().numpy()
        return np.ascontiguousarray((y - mean) / std, dtype=np.float32)

    def denormalise(self, out: np.ndarray) -> np.ndarray:
        """Model outputs (N, K) → the targets' own units (regression)."""
        mean = self.out_mean.detach().cpu().numpy()
        std = self.out_std.detach().cpu().numpy()
        return np.asarray(out, dtype=np.float64) * std + mean

    def get_model_summary(self) -> str:
        return (
            f"SequenceLSTM(input_size={self.input_size}, hidden_size={self.hidden_size}, "
            f"num_layers={self.num_layers}) + Linear({self.hidden_size}, {self.output_size}): "
            f"{self.count_parameters():,} trainable parameters"
        )
