"""Turn a user's time bound ('2023', '2023-08', '2023-08-11', an ISO timestamp) into a closed interval."""

from __future__ import annotations

import calendar
import re
from datetime import datetime, timezone, tzinfo

from chronorag.ingest.dates import DateParseError, parse_datetime

_PERIOD = re.compile(r"^\s*(\d{4})(?:-(\d{1,2}))?(?:-(\d{1,2}))?\s*$")


def period_bounds(value: str, tz: tzinfo = timezone.utc) -> tuple[datetime, datetime]:
    """(first instant, last instant) of the year/month/day named, or (t, t) for a timestamp."""
    m = _PERIOD.match(value)
    if not m:
        dt = parse_datetime(value, tz)
        return dt, dt
    year, month, day = int(m.group(1)), m.group(2), m.group(3)
    try:
        if month is None:
            start, last = datetime(year, 1, 1, tzinfo=tz), datetime(year, 12, 31, tzinfo=tz)
        elif day is None:
            mo = int(month)
            start = datetime(year, mo, 1, tzinfo=tz)
            last = start.replace(day=calendar.monthrange(year, mo)[1])
        else:
            start = last = datetime(year, int(month), int(day), tzinfo=tz)
    except ValueError as exc:
        raise DateParseError(f"{value!r} is not a valid date: {exc}") from None
    # the period's last instant, built in place: adding a day to 9999-12-31 would overflow
    return start, last.replace(hour=23, minute=59, second=59, microsecond=999999)
