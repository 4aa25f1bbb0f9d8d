"""Who may claim a partition: `ownership.decide`, a pure function of the stored claim."""

from __future__ import annotations

from antenna_platform.stream.ownership import LEASE_S, Ownership, decide
from antenna_platform.stream.sinks import StoredClaim


def stored(owner="b", generation=5, epoch=9, released=False, age=1.0) -> StoredClaim:
    return StoredClaim(epoch, generation, owner, released, age)


def test_nobody_a_released_claim_or_our_own_claim_may_be_taken():
    assert decide(None, "a", 0) is None
    assert decide(stored(owner=""), "a", 0) is None  # a row created, never claimed
    assert decide(stored(released=True), "a", 0) is None
    assert decide(stored(owner="a", generation=7), "a", 2) is None  # ours (restarted group)


def test_a_newer_generation_takes_over_a_live_holder():
    assert decide(stored(generation=5), "a", 6) is None


def test_an_older_or_equal_generation_is_refused_while_the_holder_is_alive():
    why = decide(stored(generation=5, epoch=9), "a", 4)
    assert why is not None and why.holder == "b" and why.epoch == 9 and why.mine == 4
    assert "generation 5" in str(why) and "generation 4" in str(why)
    assert decide(stored(generation=5), "a", 5) is not None  # same generation, other worker


def test_an_expired_lease_lets_any_generation_claim():
    # the group was recreated (generations start again) and the old holder is gone
    assert decide(stored(generation=50, age=LEASE_S + 1), "a", 0) is None
    assert decide(stored(generation=50, age=LEASE_S - 1), "a", 0) is not None


def test_assignments_revocations_and_claims_are_tracked():
    own = Ownership("g", "t", "a")
    own.assign([0, 1, 2], generation=3)
    assert own.pending() == [0, 1, 2] and own.assigned == {0: 3, 1: 3, 2: 3}
    own.revoke([1])
    assert own.pending() == [0, 2]
