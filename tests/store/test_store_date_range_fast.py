"""The integer fast path of ``date_range`` gives exactly what aware datetimes give.

Times with an explicit offset are computed in integer microseconds instead of through
``datetime``; whatever the input (valid or not, fractions of any length, offsets up to 99:99,
years 1 and 9999), the result must equal the definition (``aware_range`` in the offset's zone),
float for float.
"""

from __future__ import annotations

from datetime import UTC, timedelta, timezone, tzinfo

from hypothesis import given, settings
from hypothesis import strategies as st

from rhip.store.search_values import _DATE_RE, _local_zone, aware_range, date_range


def _by_datetime(text: str) -> tuple[float, float] | None:
    """The definition: aware datetimes of the written precision, ``timestamp()`` of both ends."""
    m = _DATE_RE.fullmatch(text.strip())
    if m is None:
        return None
    *parts, zone = m.groups()
    try:
        if zone is None:
            tz: tzinfo = _local_zone()
        elif zone == "Z":
            tz = UTC
        else:
            sign = 1 if zone[0] == "+" else -1
            tz = timezone(timedelta(minutes=sign * (int(zone[1:3]) * 60 + int(zone[4:6]))))
        return aware_range(*parts, tz)
    except (ValueError, OverflowError):
        return None


_digits = st.text("0123456789", min_size=1, max_size=12)
_times = st.builds(
    lambda y, mo, d, h, mi, s, frac, zone: f"{y:04d}-{mo:02d}-{d:02d}T{h:02d}:{mi:02d}{s}{frac}{zone}",
    st.sampled_from([1, 2, 1969, 1970, 1986, 1991, 2000, 2020, 2024, 9998, 9999]) | st.integers(1, 9999),
    st.integers(0, 14),
    st.integers(0, 32),
    st.integers(0, 25),
    st.integers(0, 61),
    st.sampled_from(["", ":00", ":59", ":60"]) | st.integers(0, 99).map(lambda s: f":{s:02d}"),
    st.sampled_from(["", ".5", ".123", ".999999", ".0000005", ".9999995"]) | _digits.map(lambda d: "." + d),
    st.sampled_from(["", "Z", "+08:00", "-05:00", "+05:45", "-12:00", "+14:00", "+23:59", "+24:00", "-99:99"])
    | st.builds(
        lambda sign, h, m: f"{sign}{h:02d}:{m:02d}",
        st.sampled_from("+-"),
        st.integers(0, 99),
        st.integers(0, 99),
    ),
)


@settings(max_examples=3000, deadline=None)
@given(_times)
def test_offset_times_equal_the_datetime_definition(text: str) -> None:
    assert date_range(text) == _by_datetime(text)
    assert date_range(text) == _by_datetime(text)  # second call: from the cache


def test_edges() -> None:
    for text in [
        "9999-12-31T23:59:59Z",
        "9999-12-31T23:59:58.5+01:00",
        "9999-12-31T23:59:59.9999995-01:00",
        "0001-01-01T00:00:00+14:00",
        "2020-02-29T12:00:00Z",
        "2021-02-29T12:00:00Z",
        "2020-06-01T24:00:00Z",
        "2020-06-01T10:00:60Z",
        "2020-06-01T10:00:05.1234567890123+05:45",
        " 2020-06-01T10:00Z ",
        "2020",
        "9999",
        "9999-12",
        "2020-03-08T02:30",
        "1990-04-15T02:30:00",
        "1970-01-01",
    ]:
        assert date_range(text) == _by_datetime(text), text
    assert date_range("2020-06-01T10:00:05.123Z") == (1591005605.123, 1591005605.124)
