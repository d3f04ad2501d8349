from types import SimpleNamespace

import numpy as np
import torch

from common.models import NetPolicy


class _Pick(torch.nn.Module):
    """Scores = normalised feature 0 on action 2, history mean on action 1."""

    def forward(self, features, history):
        out = torch.zeros(features.shape[0], 3)
        out[:, 2] = features[:, 0]
        out[:, 1] = history.mean(dim=(1, 2))
        return out


def test_net_policy_normalises_and_only_acts_where_masked():
    features = np.zeros((2, 3, 4), dtype=np.float32)
    features[0, 0, 0] = 4.0  # / scale 2 → 2.0 beats history 1.0 → action 2
    features[1, 2, 0] = 1.0  # / 2 → 0.5 loses to history 1.0 → action 1
    history = np.full((2, 5, 2), 3.0, dtype=np.float32)  # / 3 → 1.0
    mask = np.array([[True, False, False], [False, False, True]])
    obs = SimpleNamespace(features=features, history=history, mask=mask)
    policy = NetPolicy(_Pick(), feat_scale=np.array([2.0, 1, 1, 1]), hist_scale=3.0)
    actions = policy(obs, None)
    assert actions.dtype == np.int64
    assert actions.tolist() == [[2, 0, 0], [0, 0, 1]]
