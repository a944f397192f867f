"""Slices of several compositions: the fill that counts them (``gang_model.slice_fill``) and the
row compression greedy uses on large clusters."""

from __future__ import annotations

from unittest import mock

import numpy as np
from hypothesis import example, given, settings
from hypothesis import strategies as st

from scheduler import gang_model
from scheduler.gang_model import row_ids, slice_fill


@st.composite
def fills(draw):
    nt, k = draw(st.integers(1, 3)), 3
    take = np.array([draw(st.lists(st.integers(0, 3), min_size=k, max_size=k).filter(any)) for _ in range(nt)])
    nr = draw(st.integers(1, 6))
    offer = np.array([draw(st.lists(st.integers(0, 12), min_size=k, max_size=k)) for _ in range(nr)])
    mult = np.array(draw(st.lists(st.integers(1, 4), min_size=nr, max_size=nr)))
    group = np.array(draw(st.lists(st.integers(0, 2), min_size=nr, max_size=nr)))
    want = np.array(draw(st.lists(st.integers(0, 5), min_size=nt, max_size=nt)))
    order = draw(st.permutations(range(nt)))
    limit = draw(st.none() | st.integers(0, 8))
    return offer, mult, group, take, want, list(order), limit


# row A (two bins [2, 1]) gives three slices of type 0: one bin full, one partly; type 1 then ties
# between A's partly used bin and B [1, 1], and A's bins come first, split or not
@example((np.array([[2, 1], [1, 1]]), np.array([2, 1]), np.array([0, 0]), np.array([[1, 0], [1, 1]]),
          np.array([3, 1]), [0, 1], None))
@settings(max_examples=300, deadline=None)
@given(fills())
def test_a_row_of_equal_bins_fills_like_the_bins_one_after_another(case):
    offer, mult, group, take, want, order, limit = case
    rows = slice_fill(offer, group, take, want, order, limit, mult=mult)
    bins = slice_fill(np.repeat(offer, mult, axis=0), np.repeat(group, mult), take, want, order, limit)
    per_row = np.zeros_like(rows)
    np.add.at(per_row, np.repeat(np.arange(len(offer)), mult), bins)
    assert (rows == per_row).all()
    # no group takes more than it wants or its limit, no bin more than it offers
    for g in np.unique(group):
        got = per_row[group == g].sum(axis=0)
        assert (got <= want).all() and (limit is None or got.sum() <= limit)
    used = np.repeat(offer, mult, axis=0) - bins @ take
    assert (used >= 0).all()


def test_fill_hands_a_launcher_slice_to_the_bin_where_it_costs_no_worker_slice():
    """Columns (launchers, workers): {1 launcher, 2 workers} fits either bin; in the second it
    leaves one worker, no slice of three, so it goes to the first."""
    take = np.array([[0, 3], [1, 2]])
    offer = np.array([[1, 5], [1, 3]])
    got = slice_fill(offer, np.zeros(2, dtype=np.int64), take, np.array([2, 1]), [1, 0])
    assert got.tolist() == [[1, 1], [1, 0]]


@given(st.lists(st.lists(st.integers(-3, 3), min_size=4, max_size=4), min_size=0, max_size=12))
def test_row_ids_are_equal_exactly_for_equal_rows(rows):
    a = np.array(rows, dtype=np.int64).reshape(-1, 4)
    for hashed in (True, False):
        # without the hash (all rows hash alike) the exact fallback gives the ids
        with mock.patch.object(gang_model, "_ROW_HASH", gang_model._ROW_HASH if hashed else np.zeros(64)):
            ids = row_ids(a)
        same = (a[:, None, :] == a[None, :, :]).all(axis=2)
        assert ((ids[:, None] == ids[None, :]) == same).all()
        assert sorted(set(ids.tolist())) == list(range(len({tuple(r) for r in rows})))
