"""The `volnet train lenet5` recipe in PyTorch, for a side-by-side time and accuracy.

Same network (LeNet-5, ReLU + max pooling, C1 padded for 28x28), same initial
weights (copied from volnet's ``lenet5(seed=0)``), same batches (volnet's
BatchIterator: seed 0, batch 64, MNIST normalisation), Adam lr 2e-3 with cosine
decay stepped per epoch over 10 epochs, on the bundled sample.

    python benchmarks/train_lenet_torch.py [--epochs 10] [--threads 2] [--volnet]

``--volnet`` also runs volnet's Trainer on the identical recipe in the same
process, so the two wall times come from the same machine state.
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import nn

from volnet.data import BatchIterator, load_mnist_sample
from volnet.models import lenet5


def torch_lenet(state: dict) -> nn.Sequential:
    net = nn.Sequential(nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
                        nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                        nn.Linear(400, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(),
                        nn.Linear(84, 10))
    # volnet's Sequential uses the same positional keys (0.weight, 3.weight, 7.weight, ...)
    net.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in state.items()})
    return net


def run_torch(data, batches, x_test, epochs: int) -> tuple[float, float]:
    net = torch_lenet(lenet5(seed=0).state_dict())
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
    loss_fn = nn.CrossEntropyLoss()
    start = time.perf_counter()
    for epoch in range(epochs):
        net.train()
        for xb, yb in batches.batches(epoch):
            opt.zero_grad()
            loss = loss_fn(net(torch.from_numpy(xb)), torch.from_numpy(yb))
            loss.backward()
            opt.step()
        sched.step()
        net.eval()
        with torch.no_grad():
            acc = (net(torch.from_numpy(x_test)).argmax(1).numpy() == data.y_test).mean()
        print(f"torch  epoch {epoch + 1}: held-out accuracy {acc:.4f}", flush=True)
    return time.perf_counter() - start, float(acc)


def run_volnet(data, batches, x_test, epochs: int) -> tuple[float, float]:
    from volnet.train import Adam, CosineLR, Trainer

    net = lenet5(seed=0)
    opt = Adam(lr=2e-3)
    trainer = Trainer(net, opt, schedule=CosineLR(opt, epochs), progress=False)
    start = time.perf_counter()
    history = trainer.fit(batches, epochs, val=(x_test, data.y_test))
    return time.perf_counter() - start, history["val_accuracy"][-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--volnet", action="store_true", help="also time volnet in this process")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data = load_mnist_sample()
    batches = BatchIterator(data.x_train, data.y_train, 64, seed=0, mean=data.mean, std=data.std)
    x_test = batches.transform(data.x_test)
    seconds, acc = run_torch(data, batches, x_test, args.epochs)
    print(f"torch  {torch.__version__}: {args.epochs} epochs in {seconds:.1f} s, held-out accuracy {acc:.4f}")
    if args.volnet:
        v_seconds, v_acc = run_volnet(data, batches, x_test, args.epochs)
        print(f"volnet: {args.epochs} epochs in {v_seconds:.1f} s, held-out accuracy {v_acc:.4f}; "
              f"time ratio volnet/torch {v_seconds / seconds:.2f}")


if __name__ == "__main__":
    main()
