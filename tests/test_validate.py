"""The shared argument checks (:mod:`steerlab.validate`)."""

import numpy as np
import pytest

from steerlab.errors import EmptyInputError, LayerError
from steerlab.validate import check_layers, check_prompts


def test_layers_checked_sorted_and_unique(tiny_llama):
    assert check_layers(tiny_llama, None) == [0, 1, 2, 3]
    assert check_layers(tiny_llama, [3, 1, 3]) == [1, 3]
    with pytest.raises(LayerError, match="valid layers are 0..3"):
        check_layers(tiny_llama, [-1])
    with pytest.raises(LayerError, match="empty"):
        check_layers(tiny_llama, [])


def test_layers_of_any_integer_type(tiny_llama):
    """numpy's integers (a layer taken from an array) are layers; bools and floats are not."""
    assert check_layers(tiny_llama, [np.int64(2), np.int32(1), 2]) == [1, 2]
    assert check_layers(tiny_llama, np.int64(3)) == [3]
    for bad in ([True], [1.0], ["1"]):
        with pytest.raises(LayerError, match="not whole numbers"):
            check_layers(tiny_llama, bad)
    with pytest.raises(LayerError, match="neither a layer nor a list"):
        check_layers(tiny_llama, 1.5)


def test_prompts_checked():
    assert check_prompts("one") == ["one"]
    assert check_prompts(("a", "b")) == ["a", "b"]
    with pytest.raises(EmptyInputError, match="empty"):
        check_prompts([])
    with pytest.raises(EmptyInputError, match=r"positions \[1\]"):
        check_prompts(["fine", "  "])
