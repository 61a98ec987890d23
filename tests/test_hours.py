"Invariants of the business-hours module over arbitrary instants (the spec's table is in nbs/02_hours.ipynb)."
from datetime import datetime, timedelta, timezone

from hypothesis import given, settings as hsettings, strategies as st

from leadchat.config import Settings
from leadchat.hours import crm_due_at, is_business_hours, next_business_day_opening

instants = st.datetimes(min_value=datetime(2024, 1, 1), max_value=datetime(2030, 12, 31)).map(
    lambda d: d.replace(tzinfo=timezone.utc))
zones = st.sampled_from(['Europe/Madrid', 'America/New_York', 'Asia/Kolkata', 'Australia/Sydney', 'UTC'])


def cfg(zone):
    return Settings(rag_relevance_threshold=0.4, business_hours_timezone=zone, handoff_channels='crm')


@hsettings(max_examples=400, deadline=None)
@given(instants, zones)
def test_next_opening_is_the_first_business_instant(now, zone):
    s = cfg(zone)
    opening = next_business_day_opening(now, settings=s)
    assert opening >= now and opening.tzinfo is not None
    local = opening.astimezone(s.team_tz)
    assert local.weekday() < 5 and (local.hour, local.minute) == (s.business_hours_start, 0)
    assert is_business_hours(now=opening, settings=s)
    assert opening - now <= timedelta(days=3, hours=1)
    # when we are outside hours, no business instant lies before the opening (hourly probe)
    if not is_business_hours(now=now, settings=s):
        t = now
        while t + timedelta(hours=1) < opening:
            t += timedelta(hours=1)
            assert not is_business_hours(now=t, settings=s)


@hsettings(max_examples=300, deadline=None)
@given(instants, zones)
def test_same_day_is_stricter_and_due_dates_are_ahead(now, zone):
    s = cfg(zone)
    if is_business_hours(True, now=now, settings=s): assert is_business_hours(now=now, settings=s)
    for flag in (True, False):
        due = crm_due_at(now, flag, settings=s)
        assert due > now and due.tzinfo == timezone.utc
