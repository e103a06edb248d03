"""`ochre eval`: the metrics of docs/metrics.md for a world model, on a split of held-out trajectories.

    rollouts   rollouts on recorded actions: psnr@h, delta_psnr@16, yaw_response, code_usage, grad_ratio
    tours      scripted play against the synthetic renderer's truth
    idm        action accuracy read back by an inverse-dynamics model
    c2st       realism by a classifier two-sample test
"""

from ochre.eval.evaluate import EvalConfig, evaluate, run

__all__ = ["EvalConfig", "evaluate", "run"]
