"""The PyTorch peer of ``train_speed``'s bare step: akamaster/pytorch_resnet_cifar10's ResNet, one JSON line.

    python -m benchmarks.torch_peer --depth 32 --batch-size 128 --steps 30

The network of akamaster's ``resnet.py`` (3x3 stem, three stages of option-A blocks, global average pooling,
linear logits), in channels_last memory format, trained with SGD (momentum 0.9, weight decay 1e-4) on one
resident random batch, float32, PyTorch's default threads. Timed like ``train_speed``'s bare step: 3 warm-up
steps, then the best of 3 rounds of ``--steps`` steps. Needs PyTorch (``pip install torch``; not a dependency
of the project). ``train_speed --compare-torch`` runs it in its own process right after its own timing.
"""
from __future__ import annotations

import sys
import time
from typing import Sequence

from common.cli import run_command
from benchmarks.train_speed import step_benchmark
from common.errors import UsageError

ROUNDS = 3


def akamaster_resnet(depth: int, num_classes: int = 10):
    """akamaster/pytorch_resnet_cifar10's ``resnet{depth}()``: the same layers as ``models.resnet.build_resnet``."""
    import torch
    from torch import nn
    from torch.nn import functional

    class Block(nn.Module):
        def __init__(self, in_planes: int, planes: int, stride: int):
            super().__init__()
            self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(planes)
            self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(planes)
            self.pad = planes // 4 if stride != 1 or in_planes != planes else 0

        def forward(self, x):
            out = self.bn2(self.conv2(functional.relu(self.bn1(self.conv1(x)))))
            shortcut = functional.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad)) if self.pad else x
            return functional.relu(out + shortcut)

    class ResNet(nn.Module):
        def __init__(self):
            super().__init__()
            n = (depth - 2) // 6
            self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(16)
            blocks, planes = [], 16
            for stage, width in enumerate((16, 32, 64)):
                for index in range(n):
                    blocks.append(Block(planes, width, 2 if stage > 0 and index == 0 else 1))
                    planes = width
            self.blocks = nn.Sequential(*blocks)
            self.linear = nn.Linear(64, num_classes)
            for module in self.modules():
                if isinstance(module, (nn.Conv2d, nn.Linear)):
                    nn.init.kaiming_normal_(module.weight)

        def forward(self, x):
            out = self.blocks(functional.relu(self.bn1(self.conv1(x))))
            return self.linear(torch.flatten(functional.adaptive_avg_pool2d(out, 1), 1))

    return ResNet()


def measure(depth: int, batch_size: int, steps: int) -> dict:
    try:
        import torch
    except ImportError:
        raise UsageError("PyTorch is not installed; pip install torch to time the peer") from None
    torch.manual_seed(0)
    model = akamaster_resnet(depth).to(memory_format=torch.channels_last).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    x = torch.randn(batch_size, 3, 32, 32).to(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch_size,))
    loss_function = torch.nn.CrossEntropyLoss()

    def step():
        optimizer.zero_grad(set_to_none=True)
        loss_function(model(x), y).backward()
        optimizer.step()

    for _ in range(3):
        step()
    best = float("inf")
    for _ in range(ROUNDS):
        started = time.perf_counter()
        for _ in range(steps):
            step()
        best = min(best, (time.perf_counter() - started) / steps)
    return {"framework": "torch", "version": torch.__version__, "threads": torch.get_num_threads(),
            "depth": depth, "batch_size": batch_size, "steps": steps, "memory_format": "channels_last",
            "model_images_per_second": round(batch_size / best, 1)}


def main(argv: Sequence[str] | None = None) -> int:
    return step_benchmark("benchmarks.torch_peer", __doc__, measure, argv, steps=30)


if __name__ == "__main__":
    sys.exit(run_command(main))
