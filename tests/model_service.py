"""The diffusion model as the input builders use it (diffexpand.methods.inputs.ModelService), on CPU,
for tests that call a builder without an Expander."""

import contextlib

import torch


class CpuModelService:
    def __init__(self, parts):
        self.parts = parts

    def device(self):
        return torch.device("cpu")

    target_device = device

    def fingerprint(self):
        return {"model": "tiny"}

    def precision(self, device):
        return contextlib.nullcontext()
