from .cfg import cfg_model_fn, check_interval, steps_in_interval
from .ddim import ModelFn, ddim_invert, ddim_sample, ddim_step, predict_x0_eps
from .interpolation import angle_between, lambda_from_fraction, spherical_inter_extrapolate
from .schedule import Schedule, add_noise, sdedit_start_index
from .solvers import SOLVERS, check_solver, sample, schedule_for

__all__ = [
    "SOLVERS",
    "check_solver",
    "sample",
    "schedule_for",
    "ModelFn",
    "Schedule",
    "add_noise",
    "angle_between",
    "cfg_model_fn",
    "check_interval",
    "ddim_invert",
    "ddim_sample",
    "ddim_step",
    "predict_x0_eps",
    "lambda_from_fraction",
    "sdedit_start_index",
    "spherical_inter_extrapolate",
    "steps_in_interval",
]
