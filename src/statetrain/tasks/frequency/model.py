"""The assignment's model: an LSTM whose state the caller carries from step to step.

The state is an explicit argument and return value (never hidden inside the module) so that
training, frozen evaluation, the native kernel and the ONNX export all agree on one thing:
``(h, c)`` in, ``(h, c)`` out.
"""

from __future__ import annotations

import torch
from torch import nn

State = tuple[torch.Tensor, torch.Tensor]


class FrequencyLSTM(nn.Module):
    """LSTM(input_size → hidden_size, num_layers) followed by Linear(hidden_size → 1).

    ``forward(x, state)`` takes ``x`` of shape ``(batch, L, input_size)`` (the assignment uses L=1)
    and returns ``(out, state)`` with ``out`` of shape ``(batch, L)``.
    """

    def __init__(
        self,
        input_size: int = 5,
        hidden_size: int = 64,
        num_layers: int = 1,
        forget_bias: float = 0.0,
    ) -> None:
        super().__init__()
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.lstm = nn.LSTM(input_size, hidden_size, num_layers, batch_first=True)
        self.fc = nn.Linear(hidden_size, 1)
        if forget_bias:
            # PyTorch's gate order is (input, forget, cell, output); a positive forget bias
            # makes the cell remember by default, which long oscillations need.
            with torch.no_grad():
                for layer in range(num_layers):
                    getattr(self.lstm, f"bias_ih_l{layer}")[hidden_size : 2 * hidden_size] += (
                        forget_bias
                    )

    def init_hidden(self, batch_size: int = 1, device: torch.device | str = "cpu") -> State:
        """Zero state, the start of every epoch (or stream)."""
        shape = (self.num_layers, batch_size, self.hidden_size)
        return torch.zeros(shape, device=device), torch.zeros(shape, device=device)

    def forward(self, x: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        if x.dim() == 2:  # (batch, features): one step without the sequence axis
            x = x.unsqueeze(1)
        if state is None:
            state = self.init_hidden(x.shape[0], x.device)
        seq, state = self.lstm(x, state)
        return self.fc(seq).squeeze(-1), state

    def count_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def get_model_summary(self) -> str:
        """One line a log can carry: the architecture and its size."""
        return (
            f"FrequencyLSTM(input_size={self.input_size}, hidden_size={self.hidden_size}, "
            f"num_layers={self.num_layers}) + Linear({self.hidden_size}, 1): "
            f"{self.count_parameters():,} trainable parameters"
        )


class ExpertLSTM(nn.Module):
    """One FrequencyLSTM per frequency; the one-hot C of each row picks whose output counts.

    The per-frequency experts of config/experts.yaml are trained separately (one dataset each,
    `data.streams: [f]`) and combined here into one model with the assignment's inputs (S, C) and
    output: y = Σ_k C_k · expert_k(S, C). Every expert carries its own state, so the combined
    model is evaluated, plotted and deployed exactly like a single FrequencyLSTM.
    """

    def __init__(self, experts: list[FrequencyLSTM]) -> None:
        super().__init__()
        self.experts = nn.ModuleList(experts)
        self.input_size = experts[0].input_size
        if self.input_size != 1 + len(experts):
            raise ValueError(
                f"{len(experts)} experts need inputs (S, C_1..C_{len(experts)}), "
                f"i.e. input_size {1 + len(experts)}, not {self.input_size}"
            )

    def forward(
        self, x: torch.Tensor, state: tuple[State, ...] | None = None
    ) -> tuple[torch.Tensor, tuple[State, ...]]:
        if x.dim() == 2:
            x = x.unsqueeze(1)
        states = state or (None,) * len(self.experts)
        out = torch.zeros(x.shape[:2], dtype=x.dtype, device=x.device)
        new_states = []
        for k, (expert, s) in enumerate(zip(self.experts, states, strict=True)):
            y, s = expert(x, s)
            out = out + x[..., 1 + k] * y
            new_states.append(s)
        return out, tuple(new_states)

    def count_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def get_model_summary(self) -> str:
        sizes = ", ".join(str(e.hidden_size) for e in self.experts)
        return (
            f"ExpertLSTM({len(self.experts)} FrequencyLSTM experts, hidden {sizes}): "
            f"{self.count_parameters():,} trainable parameters"
        )
