import random

import numpy as np
import torch

from tunescope.train import checkpoint as ckpt


def test_optimizer_and_scheduler_round_trip_exactly(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, betas=(0.8, 0.95))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1 / (1 + step))
    for _ in range(3):
        model(torch.randn(2, 4)).sum().backward()
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()
    ckpt.save_optimizer(tmp_path / "opt.safetensors", optimizer, scheduler)

    fresh = torch.nn.Linear(4, 3)
    fresh.load_state_dict(model.state_dict())
    restored = torch.optim.AdamW(fresh.parameters(), lr=1.0)
    restored_scheduler = torch.optim.lr_scheduler.LambdaLR(restored, lambda step: 1 / (1 + step))
    ckpt.load_optimizer(tmp_path / "opt.safetensors", restored, restored_scheduler, "cpu")

    original, loaded = optimizer.state_dict(), restored.state_dict()
    assert loaded["param_groups"][0]["betas"] == [0.8, 0.95] or tuple(loaded["param_groups"][0]["betas"]) == (0.8, 0.95)
    for param_id, state in original["state"].items():
        for key, value in state.items():
            assert torch.equal(loaded["state"][param_id][key], value), key
    assert restored_scheduler.state_dict()["last_epoch"] == 3
    assert restored_scheduler.get_last_lr() == scheduler.get_last_lr()

    # One more identical step from both gives identical weights.
    batch = torch.randn(2, 4)
    for m, opt in ((model, optimizer), (fresh, restored)):
        m(batch).sum().backward()
        opt.step()
    assert torch.equal(model.weight, fresh.weight)


def test_rng_state_round_trip(tmp_path):
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    random.gauss(0, 1)  # leaves a cached Gaussian in Python's state
    ckpt.save_rng_state(tmp_path / "rng.safetensors")
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    random.seed(99)
    np.random.seed(99)
    torch.manual_seed(99)
    ckpt.load_rng_state(tmp_path / "rng.safetensors")
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected


def test_latest_checkpoint_skips_incomplete(tmp_path):
    for step, complete in ((2, True), (4, True), (6, False)):
        directory = tmp_path / f"checkpoint-{step}"
        directory.mkdir()
        if complete:
            (directory / "trainer_state.json").write_text("{}")
    (tmp_path / "checkpoint-8").mkdir()
    (tmp_path / "checkpoint-8" / "trainer_state.json").write_text("{trunc")
    assert ckpt.latest_checkpoint(tmp_path).name == "checkpoint-4"
    assert ckpt.latest_checkpoint(tmp_path / "missing") is None
