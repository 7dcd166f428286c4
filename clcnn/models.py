"""Ready-made networks. All end in logits: train them with losses.SoftmaxCrossEntropy, which
folds LeNet-5's output softmax into the loss (as PyTorch does); apply a softmax to predict."""
from . import layers as L
from .model import Model, Sequential


def lenet5(device=None, in_channels=1, num_classes=10):
    """LeNet-5 (LeCun et al. 1998) on 1x32x32 input: 61,706 parameters.

    conv 6@5x5 tanh -> avgpool 2 -> conv 16@5x5 tanh -> avgpool 2 -> conv 120@5x5 tanh
    -> dense 84 tanh -> dense 10.
    """
    return Sequential([
        L.Conv2D(in_channels, 6, kernel_size=5), L.Tanh(), L.AvgPool2D(2),
        L.Conv2D(6, 16, kernel_size=5), L.Tanh(), L.AvgPool2D(2),
        L.Conv2D(16, 120, kernel_size=5), L.Tanh(),
        L.Flatten(),
        L.Dense(120, 84), L.Tanh(),
        L.Dense(84, num_classes),
    ], device=device)


def mnist_cnn(device=None, channels=(32, 64), hidden=256, dropout=0.5, in_channels=1, num_classes=10):
    """A small ReLU CNN for 1x28x28 digits: conv 5x5 valid -> maxpool 2 -> conv 5x5 -> maxpool 2
    -> flatten (4x4xC) -> dense + ReLU -> dropout -> dense 10."""
    c1, c2 = channels
    return Sequential([
        L.Conv2D(in_channels, c1, kernel_size=5), L.ReLU(), L.MaxPool2D(2),
        L.Conv2D(c1, c2, kernel_size=5), L.ReLU(), L.MaxPool2D(2),
        L.Flatten(),
        L.Dense(4 * 4 * c2, hidden), L.ReLU(),
        L.Dropout(dropout),
        L.Dense(hidden, num_classes),
    ], device=device)


def _conv_bn(x, cin, cout, kernel, stride, name, activation=None):
    """Conv (no bias: BatchNorm's shift replaces it) -> BatchNorm -> optional activation."""
    x = L.Conv2D(cin, cout, kernel, stride=stride, padding=kernel // 2, bias=False, name=f"{name}conv")(x)
    x = L.BatchNorm2D(cout, name=f"{name}bn")(x)
    return activation()(x) if activation else x


def _basic_block(x, cin, cout, stride, name):
    """ResNet basic block: two 3x3 conv-BN with a shortcut; a 1x1 conv-BN projection where
    the shape changes (option B of He et al.)."""
    y = L.Conv2D(cin, cout, 3, stride=stride, padding=1, bias=False, name=f"{name}.conv1")(x)
    y = L.ReLU()(L.BatchNorm2D(cout, name=f"{name}.bn1")(y))
    y = L.Conv2D(cout, cout, 3, padding=1, bias=False, name=f"{name}.conv2")(y)
    y = L.BatchNorm2D(cout, name=f"{name}.bn2")(y)
    if stride != 1 or cin != cout:
        x = L.Conv2D(cin, cout, 1, stride=stride, bias=False, name=f"{name}.shortcut.0")(x)
        x = L.BatchNorm2D(cout, name=f"{name}.shortcut.1")(x)
    return L.ReLU()(L.Add()([x, y]))


def resnet20(in_channels=3, num_classes=10, input_size=32, device=None):
    """ResNet-20 for CIFAR-sized images (He et al. 2016, section 4.2): a 3x3 conv of 16
    filters, three stages of three basic blocks (16, 32, 64 filters; the 2nd and 3rd stages
    start with stride 2), global average pooling and a dense layer: ~0.27M parameters.
    Layer names follow the common PyTorch implementation (conv1, bn1, layer1.0.conv1, ...,
    fc), so its state_dict keys match a torch module with those attributes."""
    inp = L.Input((in_channels, input_size, input_size), name="input")
    x = L.Conv2D(in_channels, 16, 3, padding=1, bias=False, name="conv1")(inp)
    x = L.ReLU()(L.BatchNorm2D(16, name="bn1")(x))
    cin = 16
    for stage, cout in enumerate((16, 32, 64), start=1):
        for block in range(3):
            stride = 2 if stage > 1 and block == 0 else 1
            x = _basic_block(x, cin, cout, stride, f"layer{stage}.{block}")
            cin = cout
    x = L.Flatten()(L.GlobalAvgPool2D()(x))
    return Model(inp, L.Dense(64, num_classes, name="fc")(x), device=device)


def _inverted_residual(x, cin, cout, stride, expand, name):
    """MobileNetV2's block: 1x1 expansion, 3x3 depthwise, 1x1 linear projection, each with
    BatchNorm (ReLU6 after the first two); a residual Add where the shape allows."""
    hidden = cin * expand
    y = x
    if expand != 1:
        y = _conv_bn(y, cin, hidden, 1, 1, f"{name}.expand.", L.ReLU6)
    y = L.Conv2D(hidden, hidden, 3, stride=stride, padding=1, groups=hidden, bias=False,
                 name=f"{name}.depthwise.conv")(y)
    y = L.ReLU6()(L.BatchNorm2D(hidden, name=f"{name}.depthwise.bn")(y))
    y = _conv_bn(y, hidden, cout, 1, 1, f"{name}.project.")
    return L.Add()([x, y]) if stride == 1 and cin == cout else y


def mobilenet_small(in_channels=3, num_classes=10, input_size=32, device=None):
    """A small MobileNetV2-style network for 32x32 images: a 3x3 stem of 16 filters, inverted
    residual blocks (expansion 6, depthwise 3x3 convs, ReLU6) of 16-24-32-64 channels with
    three stride-2 stages, a 1x1 conv to 256, global average pooling and a dense layer."""
    inp = L.Input((in_channels, input_size, input_size), name="input")
    x = _conv_bn(inp, in_channels, 16, 3, 1, "stem.", L.ReLU6)
    cin, index = 16, 0
    for expand, cout, repeats, stride in ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 2, 2), (6, 64, 2, 2)):
        for r in range(repeats):
            x = _inverted_residual(x, cin, cout, stride if r == 0 else 1, expand, f"blocks.{index}")
            cin, index = cout, index + 1
    x = _conv_bn(x, cin, 256, 1, 1, "head.", L.ReLU6)
    x = L.Flatten()(L.GlobalAvgPool2D()(x))
    return Model(inp, L.Dense(256, num_classes, name="fc")(x), device=device)


MODELS = {"lenet5": (lenet5, (1, 32, 32)), "mnist-cnn": (mnist_cnn, (1, 28, 28)),
          "resnet20": (resnet20, (3, 32, 32)), "mobilenet-small": (mobilenet_small, (3, 32, 32))}
