"""Who may be contacted on which channel, and on which day.

Per channel, a subscriber is open unless (checked in this order; the first that applies is the
reason, and every subscriber counts under exactly one reason per channel):

1. ``no_channel_consent``: the channel names a consent column and the subscriber's value is not
   true (a missing value, or a data set without the column, counts as no consent);
2. ``no_marketing_consent``: the channel needs marketing consent, the offer is not a service
   action, and ``marketing_consent`` is not true;
3. ``do_not_disturb``: ``do_not_disturb`` is true or missing;
4. ``frequency_cap``: the campaign history holds at least ``frequency_cap.contacts`` contacts
   (treated rows) on the channel within ``frequency_cap.days`` days before the plan's first day.

Dates: each offer's moment gives a window inside the plan window (renewal: from eight weeks
before the contract ends; abnormal moment: the first three days; first use: the first two
weeks; special: the configured special dates; any: a special date when one falls in the plan
window, else the whole window). The action's date is the first day of that window outside the
subscriber's temporary do-not-disturb window (``dnd_from`` .. ``dnd_to``, inclusive); when
there is none the action is not possible (``dnd_window``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from gpuseg.action.library import Library

REASONS = ("no_channel_consent", "no_marketing_consent", "do_not_disturb", "frequency_cap")


def _flag(attributes: pd.DataFrame | None, column: str | None, missing: bool) -> np.ndarray | None:
    """Boolean column (missing values -> ``missing``); None when absent."""
    if attributes is None or column is None or column not in attributes.columns:
        return None
    s = attributes[column]
    if s.dtype == bool:
        return s.to_numpy()
    if pd.api.types.is_numeric_dtype(s):
        v = s.to_numpy(dtype=float, na_value=np.nan)
        return np.where(np.isnan(v), missing, v != 0)
    m = (
        s.astype(str)
        .str.lower()
        .map({"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False})
    )
    return m.fillna(missing).to_numpy(dtype=bool)


def history_counts(
    n: int,
    rows: np.ndarray,
    channel: np.ndarray,
    treated: np.ndarray,
    date: np.ndarray,
    channel_name: str,
    since: np.datetime64,
    until: np.datetime64,
) -> np.ndarray:
    """(N,) contacts on ``channel_name`` with since < date < until, from a campaign history."""
    sel = (channel == channel_name) & (treated == 1) & (date > since) & (date < until)
    return np.bincount(rows[sel], minlength=n)


def channel_status(
    attributes: pd.DataFrame | None,
    n: int,
    library: Library,
    start: np.datetime64,
    history=None,
    service: bool = False,
) -> dict[str, np.ndarray]:
    """Per channel, (N,) reason codes: '' where the subscriber is open (see the module
    docstring). ``history``: a :class:`gpuseg.action.uplift.Campaigns` or None."""
    marketing = _flag(attributes, "marketing_consent", False)
    dnd = _flag(attributes, "do_not_disturb", True)
    out = {}
    for name, ch in library.channels.items():
        reason = np.full(n, "", dtype=object)
        if ch.consent is not None:
            consent = _flag(attributes, ch.consent, False)
            no = np.ones(n, bool) if consent is None else ~consent
            reason[no] = "no_channel_consent"
        if ch.marketing and not service:
            no = np.ones(n, bool) if marketing is None else ~marketing
            reason[(reason == "") & no] = "no_marketing_consent"
        in_dnd = np.ones(n, bool) if dnd is None else dnd
        reason[(reason == "") & in_dnd] = "do_not_disturb"
        cap = ch.frequency_cap
        if cap is not None and history is not None and history.date is not None:
            since = start - np.timedelta64(cap.days, "D")
            count = history_counts(
                n, history.row, history.channel, history.treated, history.date, name, since, start
            )
            reason[(reason == "") & (count >= cap.contacts)] = "frequency_cap"
        out[name] = reason
    return out


def moment_windows(
    moment: str,
    n: int,
    start: np.datetime64,
    plan_days: int,
    weeks_to_contract_end: np.ndarray | None,
    period_days: float,
    special_dates: list[str],
) -> tuple[np.ndarray, np.ndarray]:
    """(from, to) dates (N,) of an offer's moment inside the plan window [start, start+days)."""
    end = start + np.timedelta64(plan_days - 1, "D")
    lo = np.full(n, start)
    hi = np.full(n, end)
    specials = [np.datetime64(d, "D") for d in special_dates]
    specials = [d for d in specials if start <= d <= end]
    if moment == "renewal" and weeks_to_contract_end is not None:
        w = np.asarray(weeks_to_contract_end, dtype=float)
        ends = start + np.round(np.nan_to_num(w, nan=0.0) * period_days).astype("timedelta64[D]")
        lo = np.maximum(lo, ends - np.timedelta64(56, "D"))
        lo = np.where(np.isfinite(w), lo, start)
    elif moment == "abnormal":
        hi = np.full(n, min(end, start + np.timedelta64(2, "D")))
    elif moment == "first_use":
        hi = np.full(n, min(end, start + np.timedelta64(13, "D")))
    elif moment in ("special", "any") and specials:
        lo = np.full(n, specials[0])
        hi = np.full(n, specials[0])
    elif moment == "special":  # no special date in the window: no moment
        hi = lo - np.timedelta64(1, "D")
    return lo.astype("datetime64[D]"), hi.astype("datetime64[D]")


def first_free_day(
    lo: np.ndarray, hi: np.ndarray, dnd_from: np.ndarray | None, dnd_to: np.ndarray | None
) -> np.ndarray:
    """First day in [lo, hi] outside [dnd_from, dnd_to]; NaT when none."""
    day = lo.copy()
    if dnd_from is not None and dnd_to is not None:
        inside = ~np.isnat(dnd_from) & (dnd_from <= day) & (day <= dnd_to)
        day = np.where(inside, dnd_to + np.timedelta64(1, "D"), day)
    return np.where(day <= hi, day, np.datetime64("NaT", "D"))


def date_column(attributes: pd.DataFrame | None, column: str) -> np.ndarray | None:
    if attributes is None or column not in attributes.columns:
        return None
    return pd.to_datetime(attributes[column], errors="coerce").to_numpy().astype("datetime64[D]")
