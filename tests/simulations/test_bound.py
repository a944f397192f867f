"""The relaxed allocation bound (simulations/bound.py, docs/fidelity.md) on hand-solved cases."""

from __future__ import annotations

import pytest

from simulations.bound import best_allocation


@pytest.mark.parametrize("shares, whole, gpus, place_all, best", [
    ({810: 2, 190: 1}, 0, 2, True, 1810),      # 810+190 on one GPU, 810 alone
    ({600: 3}, 2, 3, True, 1800),              # every share placed: no GPU left for the whole pods
    ({600: 3}, 2, 3, False, 2600),             # free to turn shares away: two whole GPUs and one share
    ({470: 4, 530: 2}, 0, 3, True, 2940),      # 470+530 twice, then 470+470 strands 60
    ({470: 4, 530: 2}, 0, 2, False, 2000),     # two GPUs: two perfect pairs
    ({810: 3}, 5, 4, True, 3430),              # three 810s on three GPUs, one whole pod of five
    ({}, 7, 4, True, 4000),                    # whole pods only: capacity is the bound
], ids=["810+190", "all-placed", "turn-away", "pairs", "pairs-two-gpus", "mixed", "whole-only"])
def test_best_allocation_on_hand_solved_cases(shares, whole, gpus, place_all, best):
    value, status = best_allocation(shares, whole, gpus, place_all=place_all)
    assert status == "OPTIMAL"
    assert value == best


def test_infeasible_when_the_shares_cannot_all_be_placed():
    """Three 600m shares cannot all sit on two GPUs: no allocation, the bound is capacity."""
    value, status = best_allocation({600: 3}, 0, 2, place_all=True)
    assert status == "INFEASIBLE" and value == 2000


def test_share_sizes_off_the_10_milli_grid_are_solved_on_a_finer_one():
    """475 + 525 fill a GPU exactly: the graph's step follows the shares (here 25 milli)."""
    value, status = best_allocation({475: 2, 525: 2}, 0, 2, place_all=True)
    assert (value, status) == (2000, "OPTIMAL")


def test_a_share_of_a_whole_gpu_or_none_is_refused():
    with pytest.raises(ValueError, match="between 0 and 1000"):
        best_allocation({1000: 1}, 0, 2, place_all=True)
