"""DP-SGD's Poisson sampling and noise never come from the run's seed, which the model card publishes:
two runs with one seed sample different batches and add different noise (real Opacus)."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from healthai_training.privacy import PrivacySettings, make_private


def _wrapped(seed: int) -> tuple[list[int], torch.Tensor]:
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    data = TensorDataset(torch.randn(2000, 3), torch.randint(0, 2, (2000,)).float())
    model = torch.nn.Linear(3, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    loader = DataLoader(data, batch_size=100, shuffle=True, generator=gen)
    model, optimizer, loader, _ = make_private(model=model, optimizer=optimizer, loader=loader,
                                               settings=PrivacySettings(), epochs=1, generator=gen)
    x, y = next(iter(loader))
    loss = torch.nn.functional.binary_cross_entropy_with_logits(model(x).squeeze(-1), y)
    loss.backward()
    optimizer.step()
    return [int(v * 1e6) for v in x[:, 0].tolist()], next(model.parameters()).detach().clone()


@pytest.mark.filterwarnings("ignore:Full backward hook is firing")
def test_two_runs_with_one_seed_sample_and_noise_differently() -> None:
    first_batch, first_weights = _wrapped(7)
    second_batch, second_weights = _wrapped(7)
    assert first_batch != second_batch  # Poisson sampling from the operating system's randomness
    assert not torch.equal(first_weights, second_weights)  # and so is the noise
