"""Ready-made networks. Both end in logits: train them with losses.SoftmaxCrossEntropy, which
folds LeNet-5's output softmax into the loss (as PyTorch does); apply a softmax to predict."""
from . import layers as L
from .model import Sequential


def lenet5(device=None):
    """LeNet-5 (LeCun et al. 1998) on 1x32x32 input: 61,706 parameters.

    conv 6@5x5 tanh -> avgpool 2 -> conv 16@5x5 tanh -> avgpool 2 -> conv 120@5x5 tanh
    -> dense 84 tanh -> dense 10.
    """
    return Sequential([
        L.Conv2D(1, 6, kernel_size=5), L.Tanh(), L.AvgPool2D(2),
        L.Conv2D(6, 16, kernel_size=5), L.Tanh(), L.AvgPool2D(2),
        L.Conv2D(16, 120, kernel_size=5), L.Tanh(),
        L.Flatten(),
        L.Dense(120, 84), L.Tanh(),
        L.Dense(84, 10),
    ], device=device)


def mnist_cnn(device=None, channels=(32, 64), hidden=256, dropout=0.5):
    """A small ReLU CNN for 1x28x28 digits: conv 5x5 valid -> maxpool 2 -> conv 5x5 -> maxpool 2
    -> flatten (4x4xC) -> dense + ReLU -> dropout -> dense 10."""
    c1, c2 = channels
    return Sequential([
        L.Conv2D(1, c1, kernel_size=5), L.ReLU(), L.MaxPool2D(2),
        L.Conv2D(c1, c2, kernel_size=5), L.ReLU(), L.MaxPool2D(2),
        L.Flatten(),
        L.Dense(4 * 4 * c2, hidden), L.ReLU(),
        L.Dropout(dropout),
        L.Dense(hidden, 10),
    ], device=device)


MODELS = {"lenet5": (lenet5, (1, 32, 32)), "mnist-cnn": (mnist_cnn, (1, 28, 28))}
