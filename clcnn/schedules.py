"""Learning-rate schedules: the learning rate for an epoch (0-based) from the base rate."""
import math


class StepLR:
    """Multiply the rate by gamma every step_size epochs (torch.optim.lr_scheduler.StepLR)."""

    def __init__(self, step_size, gamma=0.1):
        if step_size < 1 or not gamma > 0:
            raise ValueError("StepLR needs step_size >= 1 and gamma > 0")
        self.step_size, self.gamma = step_size, gamma

    def __call__(self, base_lr, epoch):
        return base_lr * self.gamma ** (epoch // self.step_size)


class CosineLR:
    """Cosine decay from base_lr to min_lr over total_epochs (CosineAnnealingLR, per epoch)."""

    def __init__(self, total_epochs, min_lr=0.0):
        if total_epochs < 1:
            raise ValueError("CosineLR needs total_epochs >= 1")
        self.total_epochs, self.min_lr = total_epochs, min_lr

    def __call__(self, base_lr, epoch):
        t = min(epoch, self.total_epochs) / self.total_epochs
        return self.min_lr + (base_lr - self.min_lr) * (1 + math.cos(math.pi * t)) / 2
