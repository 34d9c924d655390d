"""Config spaces: enumeration, constraints, validation and seeded sampling."""

from __future__ import annotations

import pytest

from atrous.core.space import Space


def test_enumerates_product_filtered_by_constraints():
    space = Space({"A": (1, 2, 4), "B": (8, 16)}, ("A * B <= 32", lambda c: c["A"] != 2))
    assert space.configs() == [{"A": 1, "B": 8}, {"A": 1, "B": 16}, {"A": 4, "B": 8}]
    assert len(space) == 3


def test_validate_names_what_is_wrong():
    space = Space({"A": (1, 2), "B": (3,)}, ("A < B - 1",))
    assert space.validate({"A": 1, "B": 3}) == {"A": 1, "B": 3}
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['C'\]"):
        space.validate({"A": 1, "B": 3, "C": 0})
    with pytest.raises(ValueError, match=r"missing key\(s\) \['B'\]"):
        space.validate({"A": 1})
    with pytest.raises(ValueError, match="A=5 is outside the space"):
        space.validate({"A": 5, "B": 3})
    with pytest.raises(ValueError, match="violates constraint A < B - 1"):
        space.validate({"A": 2, "B": 3})
    assert not space.allows({"A": 2, "B": 3})


def test_expressions_cannot_run_code():
    space = Space({"A": (1,)}, ("__import__('os').system('true')",))
    with pytest.raises(ValueError, match="unsupported syntax"):
        space.configs()


def test_sampling_is_seeded():
    space = Space({"A": tuple(range(10)), "B": tuple(range(10))})
    assert space.sample(5, seed=3) == space.sample(5, seed=3)
    assert space.sample(5, seed=3) != space.sample(5, seed=4)
    assert len(space.sample(500)) == 100


def test_empty_space_has_one_empty_config():
    assert Space({}).configs() == [{}]
