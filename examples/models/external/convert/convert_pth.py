"""Re-export the PyTorch MNIST state dicts shipped in two MIT-licensed PyPI wheels to ONNX.

Run with a CPU torch (here Debian's python3-torch 1.13.1): the wheels ship weights only,
with the architecture in their Python code; the modules below rebuild those architectures
with the same parameter names, load the shipped state dict strictly, and call
torch.onnx.export. Usage: python3 convert_pth.py CCEXAM_WHL_DIR DIGIT_RECOGNIZER_WHL_DIR OUT_DIR
"""
import os
import sys

import torch
from torch import nn


class CcexamMNISTNet(nn.Module):
    """ccexam 1.0.0 ccexam/models.py: DigitCNN(input_size=28) == MNISTNet."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.classifier = nn.Sequential(nn.Linear(64 * 7 * 7, 128), nn.ReLU(), nn.Linear(128, 10))

    def forward(self, x):
        return self.classifier(self.features(x).flatten(start_dim=1))


class DigitRecognizerCNN(nn.Module):
    """digit-recognizer-py 0.1.0 digit_recognizer/model.py: CNN."""

    def __init__(self):
        super().__init__()
        self.conv_layers = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2, 2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2, 2),
            nn.Conv2d(64, 128, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2, 2))
        self.fc_layers = nn.Sequential(nn.Linear(128 * 3 * 3, 256), nn.ReLU(), nn.Linear(256, 10))

    def forward(self, x):
        x = self.conv_layers(x)
        x = x.view(x.size(0), -1)
        return self.fc_layers(x)


def state_dict(path):
    sd = torch.load(path, map_location="cpu")
    for key in ("model_state_dict", "state_dict", "model"):
        if isinstance(sd, dict) and key in sd and isinstance(sd[key], dict):
            sd = sd[key]
    return sd


def main():
    ccexam_dir, digit_dir, out = sys.argv[1:4]
    torch.manual_seed(0)
    x = torch.zeros(1, 1, 28, 28)

    m = CcexamMNISTNet()
    m.load_state_dict(state_dict(os.path.join(ccexam_dir, "ccexam", "weights", "mnist.pth")), strict=True)
    m.eval()
    torch.onnx.export(m, x, os.path.join(out, "pypi_ccexam_mnist_cnn.onnx"), opset_version=13,
                      input_names=["input"], output_names=["logits"],
                      dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})

    m = DigitRecognizerCNN()
    m.load_state_dict(state_dict(os.path.join(digit_dir, "digit_recognizer", "models", "handwriting_model.pth")), strict=True)
    m.eval()
    torch.onnx.export(m, x, os.path.join(out, "pypi_digit-recognizer-py_cnn.onnx"), opset_version=11,
                      input_names=["input"], output_names=["logits"])


if __name__ == "__main__":
    main()
