"""The one last-real-token rule (:mod:`steerlab.padding`), on both paddings."""

import torch

from steerlab.padding import at_last, last_positions, mask_of


def test_last_positions_left_and_right_padded():
    right = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0], [1, 1, 1, 1]])
    left = right.flip(1)
    assert last_positions(right).tolist() == [2, 0, 3]
    assert last_positions(left).tolist() == [3, 3, 3]
    assert last_positions(right.bool()).tolist() == [2, 0, 3]
    assert torch.equal(mask_of(torch.tensor([3, 1, 4])), right.bool())
    assert mask_of(torch.tensor([1, 2]), width=3).tolist() == [[True, False, False],
                                                               [True, True, False]]


def test_at_last_reads_each_rows_own_token():
    x = torch.arange(2 * 4 * 3).view(2, 4, 3)
    mask = torch.tensor([[1, 1, 0, 0], [0, 1, 1, 1]])
    assert torch.equal(at_last(x, mask), torch.stack([x[0, 1], x[1, 3]]))
