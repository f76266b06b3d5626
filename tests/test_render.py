import pytest

from etl.render import human_bytes, human_count, usd


@pytest.mark.parametrize(("value", "text"), [(0, "$0.00"), (0.004, "$0.00"), (0.678, "$0.68"), (1234.567, "$1,234.57"), (-2.5, "-$2.50")])
def test_usd(value, text):
    assert usd(value) == text


@pytest.mark.parametrize(("value", "text"), [(999, "999"), (12_300, "12.3k"), (12_345_678, "12.3M"), (2_500_000_000, "2.5B")])
def test_human_count(value, text):
    assert human_count(value) == text


def test_human_bytes():
    assert human_bytes(None) == "n/a"
    assert human_bytes(512) == "512 B"
    assert human_bytes(3 * 1024 * 1024) == "3.0 MiB"
