"""envoyproxy/ratelimit conformance: every fixture in shared/conformance/ratelimit (see EXPECTATIONS.md)."""

from __future__ import annotations

from pathlib import Path

import pytest

from envoykit.ratelimit import Lookup, RateLimitConfigError, load_texts
from envoykit.ratelimit.config import RateLimitConfig
from envoykit.ratelimit.metrics import StatsRegistry
from tests.ratelimit.helpers import LOADER, Unit, descriptor, needs_conformance

pytestmark = needs_conformance


def _load(*names: str, merge: bool = False) -> RateLimitConfig:
    texts = [(n, (LOADER / n).read_text()) for n in names]
    return load_texts(texts, merge_domains=merge, stats=StatsRegistry())


ERRORS = [
    (("empty_domain.yaml",), False, "empty_domain.yaml: config file cannot have empty domain"),
    (
        ("basic_config.yaml", "duplicate_domain.yaml"),
        False,
        "duplicate_domain.yaml: duplicate domain 'test-domain' in config file",
    ),
    (("empty_key.yaml",), False, "empty_key.yaml: descriptor has empty key"),
    (
        ("duplicate_key.yaml",),
        False,
        "duplicate_key.yaml: duplicate descriptor composite key 'test-domain.key1_value1'",
    ),
    (
        ("merge_domain_key1.yaml", "merge_domain_key1.yaml"),
        True,
        "merge_domain_key1.yaml: duplicate descriptor composite key 'test-domain.key1_value1'",
    ),
    (("bad_limit_unit.yaml",), False, "bad_limit_unit.yaml: invalid rate limit unit 'foo'"),
    (
        ("replaces_self.yaml",),
        False,
        "replaces_self.yaml: replaces should not contain name of same descriptor",
    ),
    (("replaces_empty.yaml",), False, "replaces_empty.yaml: should not have an empty replaces entry"),
    (
        ("bad_yaml.yaml",),
        False,
        "bad_yaml.yaml: error loading config file: yaml: line 2: found unexpected end of stream",
    ),
    (("misspelled_key.yaml",), False, "misspelled_key.yaml: config error, unknown key 'ratelimit'"),
    (("misspelled_key2.yaml",), False, "misspelled_key2.yaml: config error, unknown key 'requestsperunit'"),
    (("non_string_key.yaml",), False, "non_string_key.yaml: config error, key is not of type string: 0.25"),
    (
        ("non_map_list.yaml",),
        False,
        "non_map_list.yaml: config error, yaml file contains list of type other than map: a",
    ),
    (
        ("unlimited_with_unit.yaml",),
        False,
        "unlimited_with_unit.yaml: should not specify rate limit unit when unlimited",
    ),
]


@pytest.mark.parametrize(("names", "merge", "expected"), ERRORS, ids=[e[0][-1] for e in ERRORS])
def test_loader_error(names: tuple[str, ...], merge: bool, expected: str) -> None:
    with pytest.raises(RateLimitConfigError) as info:
        _load(*names, merge=merge)
    assert info.value.reference_text == expected
    # envoykit's rendering adds the line (and field path) to the same message
    assert str(info.value).startswith(info.value.file or "")
    assert info.value.message in str(info.value)


def test_errors_name_line_and_field() -> None:
    with pytest.raises(RateLimitConfigError) as info:
        _load("bad_limit_unit.yaml")
    assert info.value.line == 6
    assert info.value.field == "descriptors.0.rate_limit.unit"
    assert str(info.value) == (
        "bad_limit_unit.yaml:6: descriptors.0.rate_limit.unit: invalid rate limit unit 'foo'"
    )
    with pytest.raises(RateLimitConfigError) as info:
        _load("misspelled_key2.yaml")
    assert info.value.line == 7
    assert info.value.field == "descriptors.0.rate_limit.requestsperunit"


def _limit(cfg: RateLimitConfig, *entries: tuple[str, str], domain: str = "test-domain", **kw: object):  # type: ignore[no-untyped-def]
    return Lookup(cfg).get_limit(domain, descriptor(*entries, **kw))  # type: ignore[arg-type]


def test_basic_config() -> None:
    cfg = _load("basic_config.yaml")
    lk = Lookup(cfg)
    assert lk.get_limit("foo_domain", descriptor(("key1", "value1"))) is None
    assert cfg.stats.not_found()["foo_domain"] == 1
    assert lk.get_limit("test-domain", descriptor()) is None
    assert _limit(cfg, ("key1", "something")) is None
    assert _limit(cfg, ("key1", "value1")) is None
    assert _limit(cfg, ("key2", "value2"), ("subkey", "subvalue")) is None
    assert _limit(cfg, ("key5", "value5"), ("subkey5", "subvalue")) is None

    m = _limit(cfg, ("key1", "value1"), ("subkey1", "something"))
    assert (m.limit.requests_per_unit, m.limit.unit) == (5, Unit.SECOND)
    assert m.limit.full_key == "test-domain.key1_value1.subkey1" and m.stats_key == "key1_value1.subkey1"
    m = _limit(cfg, ("key1", "value1"), ("subkey1", "subvalue1"))
    assert (m.limit.requests_per_unit, m.limit.unit) == (10, Unit.SECOND)
    assert m.limit.full_key == "test-domain.key1_value1.subkey1_subvalue1"
    m = _limit(cfg, ("key2", "something"))
    assert (m.limit.requests_per_unit, m.limit.unit, m.limit.full_key) == (
        20,
        Unit.MINUTE,
        "test-domain.key2",
    )
    m = _limit(cfg, ("key2", "value2"))
    assert (m.limit.requests_per_unit, m.limit.unit, m.limit.full_key) == (
        30,
        Unit.MINUTE,
        "test-domain.key2_value2",
    )
    assert _limit(cfg, ("key2", "value3")) is None
    m = _limit(cfg, ("key3", "foo"))
    assert (m.limit.requests_per_unit, m.limit.unit, m.limit.name) == (1, Unit.HOUR, "")
    m = _limit(cfg, ("key4", "foo"))
    assert (m.limit.requests_per_unit, m.limit.unit, m.limit.name) == (1, Unit.DAY, "key4_rate_limit")
    assert _limit(cfg, ("key6", "foo")).limit.unlimited
    m = _limit(cfg, ("key7", "unspecified_value"))
    assert (m.limit.requests_per_unit, m.limit.unit) == (70, Unit.MINUTE)
    assert m.stats_key == "key7_unspecified_value"
    assert m.stats is cfg.stats.get("test-domain", "key7_unspecified_value")
    assert _limit(cfg, ("key7", "another_value")).stats_key == "key7_another_value"


def test_limit_override() -> None:
    cfg = _load("basic_config.yaml")
    lk = Lookup(cfg)
    d = descriptor(("key1", "value1"), ("subkey1", "something"), limit=(10, Unit.DAY))
    m = lk.get_limit("test-domain", d)
    assert m is not None
    assert (m.limit.requests_per_unit, m.limit.unit) == (10, Unit.DAY)
    assert m.limit.full_key == "test-domain.key1_value1.subkey1_something"
    assert not m.limit.shadow_mode
    m2 = lk.get_limit(
        "test-domain", descriptor(("key1", "value1"), ("subkey1", "something"), limit=(42, Unit.HOUR))
    )
    assert m2 is not None
    assert (m2.limit.requests_per_unit, m2.limit.unit) == (42, Unit.HOUR)
    assert m2.stats is m.stats
    m3 = lk.get_limit(
        "test-domain", descriptor(("key1", "value1"), ("subkey1", "something_else"), limit=(1, 1))
    )
    assert m3 is not None
    assert m3.stats is not m.stats and m3.stats_key == "key1_value1.subkey1_something_else"
    assert lk.get_limit("foo_domain", d) is None


def test_domain_merge() -> None:
    cfg = _load("merge_domain_key1.yaml", "merge_domain_key2.yaml", merge=True)
    assert _limit(cfg, ("key1", "value1")).limit.requests_per_unit == 10
    assert _limit(cfg, ("key2", "value2")).limit.requests_per_unit == 20
    with pytest.raises(RateLimitConfigError) as info:
        _load("merge_domain_key1.yaml", "merge_domain_key2.yaml")
    assert (
        info.value.reference_text == "merge_domain_key2.yaml: duplicate domain 'test-domain' in config file"
    )


def test_shadow_mode_config() -> None:
    cfg = _load("shadowmode_config.yaml")
    cases = [
        ((("key1", "value1"), ("subkey1", "something")), 5, Unit.SECOND, False),
        ((("key1", "value1"), ("subkey1", "subvalue1")), 10, Unit.SECOND, True),
        ((("key2", "something"),), 20, Unit.MINUTE, True),
        ((("key2", "value2"),), 30, Unit.MINUTE, False),
    ]
    for entries, rpu, unit, shadow in cases:
        m = _limit(cfg, *entries)
        assert (m.limit.requests_per_unit, m.limit.unit, m.limit.shadow_mode) == (rpu, unit, shadow), entries


def test_wildcard() -> None:
    cfg = _load("wildcard.yaml")
    a, b = _limit(cfg, ("noVal", "foo1")), _limit(cfg, ("noVal", "foo2"))
    assert a.limit is b.limit and a.stats_key == "noVal"
    for v in ("foo1", "foo2"):
        m = _limit(cfg, ("wild", v))
        assert m.limit.requests_per_unit == 20 and m.stats_key == "wild_foo*"
        assert m.share_patterns is None  # each value keeps its own counter
    m = _limit(cfg, ("nestedWild", "val1"), ("wild", "goo2"))
    assert m.limit.full_key == "test-domain.nestedWild_val1.wild_goo*"
    assert _limit(cfg, ("wild", "bar")) is None
    assert _limit(cfg, ("noWild", "foo1")) is None
    for v in ("barab", "bar123b", "barb"):
        assert _limit(cfg, ("midWild", v)).stats_key == "midWild_bar*b", v
    for v in ("bara", "xbarb"):
        assert _limit(cfg, ("midWild", v)) is None, v
    for v in ("foo123bar456baz", "foobarbaz"):
        assert _limit(cfg, ("multiWild", v)).limit.requests_per_unit == 10, v
    for v in ("foo123baz", "bar456baz"):
        assert _limit(cfg, ("multiWild", v)) is None, v


def test_share_threshold() -> None:
    cfg = _load("share_threshold.yaml")
    for v in ("files/a.pdf", "files/b.csv", "files/c.txt"):
        m = _limit(cfg, ("files", v))
        assert m.limit.requests_per_unit == 100 and m.share_patterns == ("files/*",)
        assert m.stats_key == "files_files/*"
    m = _limit(cfg, ("route", "api/v1"), ("method", "GET"))
    assert m.limit.requests_per_unit == 60 and m.stats_key == "route_api/*.method"
    m = _limit(cfg, ("service", "svc/user"), ("endpoint", "get"))
    assert m.limit.requests_per_unit == 80 and m.stats_key == "service_svc/*.endpoint_get"
    m = _limit(cfg, ("nested", "parent"), ("files", "nested/file1.txt"))
    assert m.limit.requests_per_unit == 200 and m.stats_key == "nested_parent.files_nested/*"
    m = _limit(cfg, ("files", "top/file1.txt"), ("files", "nested/file1.txt"))
    assert m.limit.requests_per_unit == 300 and m.share_patterns == ("top/*", "nested/*")
    m = _limit(cfg, ("path", "path/foo"), ("file", "file/doc1"), ("type", "pdf"))
    assert m.limit.requests_per_unit == 120 and m.share_patterns[:2] == ("path/*", "")
    assert m.stats_key == "path_path/*.file_file/*.type"
    m = _limit(cfg, ("user", "user/alice"), ("resource", "res/file1"), ("action", "read"))
    assert m.limit.requests_per_unit == 150 and m.stats_key == "user_user/*.resource_res/*.action"
    m = _limit(cfg, ("file", "test1"))
    assert m.limit.requests_per_unit == 50 and m.share_patterns is None
    for v in ("test2", "test23", "test123"):
        m = _limit(cfg, ("file", v))
        assert m.limit.requests_per_unit == 100 and m.share_patterns == ("test*",), v
    for v in ("/api/v1", "/api-beta-v1", "/apiXYZv1"):
        assert _limit(cfg, ("midpath", v)).share_patterns == ("/api*v1",), v
    assert _limit(cfg, ("midpath", "/api/v2")) is None
    for v in ("svcAepBrpc", "svcXXXepYYYrpc", "svceprpc"):
        assert _limit(cfg, ("multiroute", v)).share_patterns == ("svc*ep*rpc",), v
    assert _limit(cfg, ("multiroute", "svcABCrpc")) is None
    assert _limit(cfg, ("midroute", "/api/x/v2")).stats_key == "midroute_/api*v2"
    a = _limit(cfg, ("tenant", "t1prod"), ("resource", "resAv2"))
    b = _limit(cfg, ("tenant", "t99prod"), ("resource", "resBBBv2"))
    assert a.stats_key == b.stats_key == "tenant_t*prod.resource_res*v2" and a.stats is b.stats


def test_metadata() -> None:
    cfg = _load("metadata.yaml")
    m = _limit(cfg, ("key1", "value1"), ("subkey1", "something"))
    assert m.limit.requests_per_unit == 5 and m.limit.metadata == {"name": "service_1"}
    m = _limit(cfg, ("key2", "something"))
    assert m.limit.requests_per_unit == 20 and m.limit.metadata == {
        "service_with_quota": {"name": "service_2"}
    }


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "domain: d\ndescriptors:\n  - key: k\n    rate_limit: {unit: second, requests_per_unit: 1.5}\n",
            "error checking config",
        ),
        (
            "domain: d\ndescriptors:\n  - key: k\n    value: v\n    share_threshold: true\n",
            "share_threshold can only be used with wildcard values (containing '*'), but found key 'k_v'",
        ),
        (
            "domain: d\ndescriptors:\n  - key: a\n    value: b_c\n  - key: a_b\n    value: c\n",
            "duplicate descriptor composite key 'd.a_b_c'",
        ),
        (
            "domain: d\ndescriptors:\n  - key: k\n    rate_limit: {unit: second, requests_per_unit: abc}\n",
            "error loading config file: line 4: cannot unmarshal !!str `abc` into uint32",
        ),
        (
            "domain: d\ndescriptors:\n  - key: k\n    metadata: [1, 2]\n",
            "error parsing metadata: metadata must be a map",
        ),
    ],
)
def test_rules_without_fixture(text: str, message: str) -> None:
    with pytest.raises(RateLimitConfigError) as info:
        load_texts([("x.yaml", text)])
    assert info.value.message == message


def test_loader_rules_that_load() -> None:
    text = (
        "domain: d\ndescriptors:\n"
        "  - key: a\n    rate_limit: {unlimited: true}\n"
        "  - key: b\n    rate_limit: {unit: Week, requests_per_unit: 0}\n"
        "  - key: c\n"
        "  - key: n\n    value: 01\n    rate_limit: {unit: YEAR, requests_per_unit: 3}\n"
    )
    cfg = load_texts([("x.yaml", text)])
    assert _limit(cfg, ("a", "x"), domain="d").limit.unlimited
    m = _limit(cfg, ("b", "x"), domain="d")
    assert (m.limit.requests_per_unit, m.limit.window_ms) == (0, 7 * 86400 * 1000)
    assert _limit(cfg, ("c", "x"), domain="d") is None
    assert _limit(cfg, ("n", "01"), domain="d").limit.window_ms == 365 * 86400 * 1000


def test_fixture_dir_is_beside_repo() -> None:
    assert Path(LOADER).is_dir()


def test_value_to_metric_and_detailed_metric_stats_keys() -> None:
    text = (
        "domain: d\ndescriptors:\n"
        "  - key: route\n    value_to_metric: true\n    descriptors:\n"
        "      - key: method\n        rate_limit: {unit: second, requests_per_unit: 1}\n"
        "  - key: wild\n    value: api*\n    value_to_metric: true\n"
        "    rate_limit: {unit: second, requests_per_unit: 1}\n"
        "  - key: plain\n    rate_limit: {unit: second, requests_per_unit: 1}\n"
    )
    cfg = load_texts([("d.yaml", text)], stats=StatsRegistry())
    m = _limit(cfg, ("route", "/users"), ("method", "GET"), domain="d")
    assert m.stats_key == "route_/users.method" and m.limit.full_key == "d.route.method"
    assert _limit(cfg, ("wild", "api/v2"), domain="d").stats_key == "wild_api/v2"
    m = _limit(cfg, ("plain", "x"), domain="d")
    assert m.stats_key == "plain" and m.stats is cfg.stats.get("d", "plain")
