"""Rules (contract section 4) and available to sell (section 5)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from availability.ats import LocationAvailability, SkuAvailability, build_availability, view
from availability.events import event_from_dict
from availability.identifiers import parse_timestamp
from availability.rules import InvalidRule, Rule, RuleBook, parse_rule
from availability.state import fold_all

# --- parse_rule ----------------------------------------------------------------


def test_all_null_body_is_a_rule_for_any_scope() -> None:
    body = {"sku": None, "location_id": None, "safety_stock": None, "channel_buffers": None}
    assert parse_rule("r1", body) == Rule("r1", None, None, None, None)


def test_absent_fields_are_null() -> None:
    rule = parse_rule("r1", {"sku": "SKU-1"})
    assert rule == Rule("r1", sku="SKU-1")
    assert rule.to_data() == {
        "rule_id": "r1",
        "sku": "SKU-1",
        "location_id": None,
        "safety_stock": None,
        "channel_buffers": None,
    }


def test_full_body_with_matching_rule_id() -> None:
    body = {
        "rule_id": "r.1:x-y_z",
        "sku": "SKU-1",
        "location_id": "S-1",
        "safety_stock": 0,
        "channel_buffers": {"online": 2, "marketplace": 0},
    }
    rule = parse_rule("r.1:x-y_z", body)
    assert rule.scope == ("SKU-1", "S-1")
    assert rule.safety_stock == 0
    assert rule.channel_buffers == {"online": 2, "marketplace": 0}
    assert rule.to_data() == {**body, "channel_buffers": {"marketplace": 0, "online": 2}}


@pytest.mark.parametrize(
    ("rule_id", "body", "expected"),
    [
        ("r1", {"safety_stock": -1}, "safety_stock must be null or an integer"),
        ("r1", {"safety_stock": True}, "safety_stock must be null or an integer"),
        ("r1", {"safety_stock": 2.0}, "safety_stock must be null or an integer"),
        ("r1", {"safety_stock": "2"}, "safety_stock must be null or an integer"),
        ("r1", {"safety_stock": 1_000_000_001}, "safety_stock must be null or an integer"),
        ("r1", {"safetystock": 1}, "unknown field(s): safetystock"),
        ("r1", {"channel_buffers": {"Online": 1}}, "channel 'Online' must match"),
        ("r1", {"channel_buffers": {"c" * 33: 1}}, "must match [a-z0-9_-]{1,32}"),
        ("r1", {"channel_buffers": {"online": "5"}}, "channel_buffers['online'] must be"),
        ("r1", {"channel_buffers": {"online": -1}}, "channel_buffers['online'] must be"),
        ("r1", {"channel_buffers": {"online": False}}, "channel_buffers['online'] must be"),
        ("r1", {"channel_buffers": [["online", 1]]}, "channel_buffers must be null or an object"),
        ("r1", {"rule_id": "r2"}, "rule_id in the body ('r2') differs from the path"),
        ("r1", {"sku": ""}, "sku must be null or 1-128"),
        ("r1", {"sku": "S" * 129}, "sku must be null or 1-128"),
        ("r1", {"location_id": "L" * 65}, "location_id must be null or 1-64"),
        ("r1", ["safety_stock", 1], "the rule must be a JSON object"),
        ("r1", None, "the rule must be a JSON object"),
        ("a/b", {}, "rule_id must be 1-128 characters"),
        ("", {}, "rule_id must be 1-128 characters"),
        ("r" * 129, {}, "rule_id must be 1-128 characters"),
    ],
)
def test_invalid_rule_lists_the_problem(rule_id: str, body: Any, expected: str) -> None:
    with pytest.raises(InvalidRule) as caught:
        parse_rule(rule_id, body)
    assert len(caught.value.problems) == 1
    assert expected in caught.value.problems[0]


def test_several_problems_are_reported_together() -> None:
    body = {"safety_stock": -1, "channel_buffers": {"X": 1, "ok": "2"}, "extra": 1, "rule_id": "b"}
    with pytest.raises(InvalidRule) as caught:
        parse_rule("a/b", body)
    problems = caught.value.problems
    assert len(problems) == 6
    for text in ["rule_id must be", "unknown field(s): extra", "differs from the path"]:
        assert any(text in problem for problem in problems), text
    for text in ["safety_stock", "channel 'X'", "channel_buffers['ok']"]:
        assert any(text in problem for problem in problems), text
    assert str(caught.value) == "; ".join(problems)


def test_bad_path_and_non_object_body_are_both_reported() -> None:
    with pytest.raises(InvalidRule) as caught:
        parse_rule("a/b", "not an object")
    assert len(caught.value.problems) == 2


# --- RuleBook ------------------------------------------------------------------


def test_put_replace_delete() -> None:
    book = RuleBook()
    first = Rule("r1", sku="A", safety_stock=1)
    assert book.put(first)
    assert book.get("r1") == first
    second = Rule("r1", sku="A", safety_stock=4)
    assert book.put(second)
    assert len(book) == 1
    assert book.get("r1") == second
    assert book.resolve("A", "L").safety_stock == 4
    assert book.delete("r1") == second
    assert book.delete("r1") is None
    assert book.get("r1") is None
    assert len(book) == 0
    assert book.resolve("A", "L").safety_stock == 0


def test_equal_scope_with_another_rule_id_conflicts_and_changes_nothing() -> None:
    holder = Rule("r1", sku="A", location_id="L", safety_stock=1)
    book = RuleBook([holder])
    intruder = Rule("r2", sku="A", location_id="L", safety_stock=9)
    assert book.conflict(intruder) == holder
    assert book.conflict(Rule("r1", sku="A", location_id="L")) is None
    assert not book.put(intruder)
    assert book.get("r2") is None
    assert book.all() == [holder]
    assert book.resolve("A", "L").safety_stock == 1


def test_constructor_refuses_conflicting_rules() -> None:
    with pytest.raises(ValueError, match="r2"):
        RuleBook([Rule("r1"), Rule("r2")])


def test_replacing_a_rule_with_a_new_scope_frees_the_old_scope() -> None:
    book = RuleBook([Rule("r1", sku="A", safety_stock=1)])
    assert book.put(Rule("r1", sku="B", safety_stock=1))
    assert book.resolve("A", "L").safety_stock == 0
    assert book.put(Rule("r2", sku="A", safety_stock=2))
    assert book.resolve("A", "L").safety_stock == 2
    assert not book.put(Rule("r3", sku="B"))


def test_deleting_frees_the_scope() -> None:
    book = RuleBook([Rule("r1", location_id="L")])
    book.delete("r1")
    assert book.put(Rule("r2", location_id="L"))


def test_all_is_sorted_by_rule_id() -> None:
    book = RuleBook([Rule("b", sku="B"), Rule("c", sku="C"), Rule("a", sku="A"), Rule("B")])
    assert [rule.rule_id for rule in book.all()] == ["B", "a", "b", "c"]


# --- resolution (contract section 4) --------------------------------------------

SKU_LOC = Rule("sku-loc", sku="A", location_id="L1", safety_stock=4)
SKU_ANY = Rule("sku-any", sku="A", safety_stock=3)
ANY_LOC = Rule("any-loc", location_id="L1", safety_stock=2)
ANY_ANY = Rule("any-any", safety_stock=1)
LEVELS = [SKU_LOC, SKU_ANY, ANY_LOC, ANY_ANY]


def buffers(**named: int) -> dict[str, int]:
    return named


RESOLUTION_CASES: list[tuple[str, list[Rule], str, str, int, dict[str, int]]] = [
    # (name, rules, sku, location, safety stock, expected buffers of online/marketplace/store)
    ("sku+loc wins", LEVELS, "A", "L1", 4, {}),
    ("sku beats loc", LEVELS, "A", "L2", 3, {}),
    ("loc beats any", LEVELS, "B", "L1", 2, {}),
    ("any", LEVELS, "B", "L2", 1, {}),
    ("sku beats loc, without sku+loc", [SKU_ANY, ANY_LOC, ANY_ANY], "A", "L1", 3, {}),
    ("no rules match", [Rule("x", sku="B", safety_stock=5)], "A", "L1", 0, {}),
    (
        "null safety falls through",
        [Rule("a", sku="A", location_id="L1"), Rule("b", sku="A"), ANY_LOC, ANY_ANY],
        "A",
        "L1",
        2,
        {},
    ),
    (
        "safety 0 is a value, not null",
        [Rule("a", sku="A", location_id="L1", safety_stock=0), ANY_ANY],
        "A",
        "L1",
        0,
        {},
    ),
    (
        "buffers per channel from the most specific naming it",
        [
            Rule("g", channel_buffers={"online": 5, "marketplace": 2}),
            Rule("s", sku="A", channel_buffers={"online": 1}),
        ],
        "A",
        "L1",
        0,
        buffers(online=1, marketplace=2),
    ),
    (
        "buffer 0 overrides a less specific buffer",
        [
            Rule("g", safety_stock=3, channel_buffers={"online": 5}),
            Rule("s", sku="A", location_id="L1", channel_buffers={"online": 0}),
        ],
        "A",
        "L1",
        3,
        buffers(online=0),
    ),
    (
        "empty or null buffers name no channel",
        [
            Rule("g", channel_buffers={"online": 5, "store": 1}),
            Rule("l", location_id="L1", channel_buffers={}),
            Rule("s", sku="A", safety_stock=7),
        ],
        "A",
        "L1",
        7,
        buffers(online=5, store=1),
    ),
    (
        "buffers and safety from different levels",
        [
            Rule("g", safety_stock=1, channel_buffers={"store": 4}),
            Rule("l", location_id="L1", channel_buffers={"marketplace": 3}),
            Rule("s", sku="A", safety_stock=6, channel_buffers={"online": 2}),
        ],
        "A",
        "L1",
        6,
        buffers(online=2, marketplace=3, store=4),
    ),
]


@pytest.mark.parametrize(
    ("rules", "sku", "location", "safety", "expected"),
    [case[1:] for case in RESOLUTION_CASES],
    ids=[case[0] for case in RESOLUTION_CASES],
)
def test_resolution(
    rules: list[Rule], sku: str, location: str, safety: int, expected: dict[str, int]
) -> None:
    resolved = RuleBook(rules).resolve(sku, location)
    assert resolved.safety_stock == safety
    for channel in ["online", "marketplace", "store", "other"]:
        assert resolved.buffer(channel) == expected.get(channel, 0), channel


SKUS = ["A", "B"]
LOCATIONS = ["L1", "L2"]
CHANNELS = ["online", "store", "marketplace"]


def brute_force(rules: list[Rule], sku: str, location: str, channel: str) -> tuple[int, int]:
    """(safety_stock, buffer(channel)) straight from the wording of section 4."""

    def specificity(rule: Rule) -> int:
        return {(True, True): 3, (True, False): 2, (False, True): 1, (False, False): 0}[
            (rule.sku is not None, rule.location_id is not None)
        ]

    matching = [
        rule for rule in rules if rule.sku in (None, sku) and rule.location_id in (None, location)
    ]
    matching.sort(key=specificity, reverse=True)
    safety = [r.safety_stock for r in matching if r.safety_stock is not None]
    buffer = [
        r.channel_buffers[channel]
        for r in matching
        if r.channel_buffers is not None and channel in r.channel_buffers
    ]
    return (safety[0] if safety else 0, buffer[0] if buffer else 0)


@st.composite
def rule_sets(draw: st.DrawFn) -> list[Rule]:
    scopes = draw(
        st.lists(
            st.tuples(st.sampled_from([None, *SKUS]), st.sampled_from([None, *LOCATIONS])),
            max_size=9,
            unique=True,  # one scope holds at most one rule: no duplicate scopes
        )
    )
    rules = []
    for index, (sku, location) in enumerate(scopes):
        safety = draw(st.none() | st.integers(0, 5))
        channel_buffers = draw(
            st.none() | st.dictionaries(st.sampled_from(CHANNELS), st.integers(0, 5))
        )
        rules.append(Rule(f"r{index}", sku, location, safety, channel_buffers))
    return rules


@settings(max_examples=300, deadline=None)
@given(rule_sets())
def test_resolve_equals_a_brute_force_reading_of_the_contract(rules: list[Rule]) -> None:
    book = RuleBook(reversed(rules))  # insertion order must not matter
    for sku in SKUS:
        for location in LOCATIONS:
            resolved = book.resolve(sku, location)
            for channel in [*CHANNELS, "other"]:
                got = (resolved.safety_stock, resolved.buffer(channel))
                assert got == brute_force(rules, sku, location, channel)


# --- available to sell (contract section 5) --------------------------------------


@pytest.mark.parametrize(
    ("on_hand", "reserved", "safety", "buffer", "ats"),
    [
        (10, 0, 0, 0, 10),
        (10, 3, 2, 1, 4),
        (10, 3, 2, 5, 0),
        (10, 3, 2, 6, 0),
        (-4, 0, 0, 0, 0),
        (5, 9, 0, 0, 0),
        (0, 0, 0, 0, 0),
    ],
)
def test_ats_arithmetic(on_hand: int, reserved: int, safety: int, buffer: int, ats: int) -> None:
    location = LocationAvailability("L1", on_hand, reserved, 7, 1, safety, {"online": buffer})
    answer = view(SkuAvailability("A", (location,), None), "online")
    assert answer["ats"] == ats
    assert answer["locations"] == [
        {
            "location_id": "L1",
            "on_hand": on_hand,
            "reserved": reserved,
            "in_transit": 7,
            "damaged": 1,
            "safety_stock": safety,
            "buffer": buffer,
            "ats": ats,
        }
    ]
    assert view(SkuAvailability("A", (location,), None), "store")["ats"] == max(
        0, on_hand - reserved - safety
    )


T = "2026-11-22T10:00:00Z"
NOW = parse_timestamp("2026-11-22T10:30:00Z")


@pytest.fixture
def folded() -> SkuAvailability:
    raw: list[dict[str, Any]] = [
        {"type": "erp.balance", "location_id": "L1", "on_hand": 20, "as_of": T},
        {"type": "erp.balance", "location_id": "L2", "on_hand": 5, "as_of": T},
        {"type": "pos.sale", "location_id": "L3", "quantity": 2, "occurred_at": T},
        {
            "type": "reservation.created",
            "reservation_id": "R1",
            "location_id": "L1",
            "quantity": 3,
            "occurred_at": T,
        },
    ]
    events = [event_from_dict({"event_id": f"e{i}", "sku": "A", **e}) for i, e in enumerate(raw)]
    rules = RuleBook(
        [
            Rule("g", safety_stock=2, channel_buffers={"online": 4}),
            Rule("l3", location_id="L3", safety_stock=0),
        ]
    )
    return build_availability(fold_all("A", events), rules, NOW)


def test_network_ats_is_the_sum_of_clamped_location_ats(folded: SkuAvailability) -> None:
    online = view(folded, "online")
    # L1: 20-3-2-4 = 11; L2: 5-0-2-4 < 0 -> 0; L3: -2 -> 0
    assert [(loc["location_id"], loc["ats"]) for loc in online["locations"]] == [
        ("L1", 11),
        ("L2", 0),
        ("L3", 0),
    ]
    assert online["ats"] == 11
    assert online["locations"][2]["on_hand"] == -2
    store = view(folded, "store")
    assert [loc["ats"] for loc in store["locations"]] == [15, 3, 0]
    assert (store["ats"], store["channel"], store["sku"]) == (18, "store", "A")


def test_location_filter_narrows_list_and_total(folded: SkuAvailability) -> None:
    narrowed = view(folded, "store", "L2")
    assert narrowed["ats"] == 3
    assert [loc["location_id"] for loc in narrowed["locations"]] == ["L2"]
    assert view(folded, "store", "L9") == {
        "sku": "A",
        "channel": "store",
        "ats": 0,
        "locations": [],
    }
