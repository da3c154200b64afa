from .cfg import cfg_model_fn
from .ddim import ModelFn, ddim_invert, ddim_sample, ddim_step, predict_x0_eps
from .interpolation import angle_between, lambda_from_fraction, spherical_inter_extrapolate
from .schedule import Schedule, add_noise, sdedit_start_index

__all__ = [
    "ModelFn",
    "Schedule",
    "add_noise",
    "angle_between",
    "cfg_model_fn",
    "ddim_invert",
    "ddim_sample",
    "ddim_step",
    "predict_x0_eps",
    "lambda_from_fraction",
    "sdedit_start_index",
    "spherical_inter_extrapolate",
]
