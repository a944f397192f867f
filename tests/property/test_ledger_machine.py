"""The ledger as a state machine: assume / confirm / forget / release / node failure.

After every step the live snapshot equals a recomputation from the allocations, and no
GPU and no extended resource (``rdma/ib``, which node n2 lacks) is ever over-committed.
"""

from __future__ import annotations

from dataclasses import replace

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, consumes, invariant, rule

from models.cluster import cluster_from_data
from models.topology import build_arrays
from scheduler.ledger import Allocation, AllocState, Ledger, LedgerError

ARRAYS = build_arrays(cluster_from_data({
    "nodes": [{"name": f"n{i}", "topology": {"gpus": {"count": 4}}, "cpu_milli": 8000, "memory_mib": 8192,
               "extended_resources": {"rdma/ib": 4} if i < 2 else {}}
              for i in range(3)],
}, "machine"))


class LedgerMachine(RuleBasedStateMachine):
    keys = Bundle("keys")

    def __init__(self) -> None:
        super().__init__()
        self.ledger = Ledger(ARRAYS)
        self.counter = 0

    @rule(target=keys, node=st.integers(0, 2), gpus=st.sets(st.integers(0, 3), min_size=0, max_size=4),
          milli=st.sampled_from([1000, 500, 250]), cpu=st.integers(0, 3000), rdma=st.integers(0, 3),
          gang=st.sampled_from([None, "g1", "g2"]))
    def assume(self, node, gpus, milli, cpu, rdma, gang):
        gpus = tuple(sorted(gpus))
        if milli < 1000:
            gpus = gpus[:1]
        self.counter += 1
        key = f"p{self.counter}"
        a = Allocation(key, node, gpus, milli, cpu, 0, gang=gang, extended=(("rdma/ib", rdma),) if rdma else ())
        free = self.ledger.live.gpu_free[node]
        rdma_free = int(self.ledger.live.free_ext[node, 0])
        fits = all(free[g] >= milli for g in gpus) and rdma <= rdma_free
        try:
            self.ledger.assume(a)
        except LedgerError:
            assert not fits
            return "absent-" + key
        assert fits
        return key

    @rule(key=keys)
    def confirm(self, key):
        if self.ledger.state(key) == AllocState.ASSUMED:
            self.ledger.confirm(key)
            assert self.ledger.state(key) == AllocState.BOUND

    @rule(key=consumes(keys))
    def forget_or_release(self, key):
        st_ = self.ledger.state(key)
        if st_ is None:
            try:
                self.ledger.release(key)
            except LedgerError:
                return
            raise AssertionError("released an absent key")
        if st_ == AllocState.ASSUMED:
            self.ledger.forget(key)
        else:
            self.ledger.release(key)
        assert key not in self.ledger

    @rule(key=keys, gang=st.sampled_from([None, "g1", "g3"]))
    def moves_to_another_gang(self, key, gang):
        """The watch shows a bound pod whose gang changed (re-labelled): the gang index follows."""
        a = self.ledger.get(key)
        if a is None or self.ledger.state(key) != AllocState.BOUND:
            return
        self.ledger.observe(replace(a, gang=gang), force=True)
        assert all(m.key != key for g in ("g1", "g2", "g3") if g != gang for m in self.ledger.of_gang(g))
        assert gang is None or key in {m.key for m in self.ledger.of_gang(gang)}

    @rule(node=st.integers(0, 2), failed=st.booleans())
    def node_fails(self, node, failed):
        self.ledger.set_failed(node, failed)

    @invariant()
    def consistent(self):
        self.ledger.check_invariants()
        free = self.ledger.live.gpu_free
        assert (free[free != -1] >= 0).all()
        assert (self.ledger.live.free_ext >= 0).all()
        assert ARRAYS.ext_alloc[2, 0] == 0 and not self.ledger.live.free_ext[2].any()


LedgerMachine.TestCase.settings = settings(max_examples=60, stateful_step_count=30, deadline=None)
TestLedgerMachine = LedgerMachine.TestCase
