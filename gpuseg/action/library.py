"""The product library and channels: ``configs/offers.yaml`` as typed, validated dataclasses.

See the comments in ``configs/offers.yaml`` for every key. Unknown keys, wrong types and values
out of range raise :class:`~gpuseg.errors.ConfigError` naming the file and key; an offer's
``eligible`` condition is checked by the tag rule parser
(:func:`gpuseg.segment.tags.parse_tag_rules`).
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from gpuseg.config import SegmentsConfig, from_dict, read_yaml_file
from gpuseg.errors import ConfigError
from gpuseg.segment.tags import TagRules, parse_tag_rules

DEFAULT_OFFERS = Path(__file__).resolve().parent.parent.parent / "configs" / "offers.yaml"
MOMENTS = ("renewal", "first_use", "abnormal", "special", "any")
# an offer without `eligible` is for everyone: the negation of a condition on an absent column
ALWAYS = {"not": {"column": "__no_such_column__", "op": "is_null", "optional": True}}


@dataclass
class FrequencyCap:
    contacts: int = 1  # at most this many contacts on the channel ...
    days: int = 30  # ... within this many days up to the planned date (history included)


@dataclass
class Channel:
    name: str = ""
    description: str = ""
    consent: str | None = None  # consent column of the static table; None: no channel consent
    marketing: bool = True  # also needs marketing_consent (except for service offers)
    cost: float = 0.0  # per contact
    capacity: int | None = None  # contacts within the plan window; None: unlimited
    hours: list[int] | None = None  # [from, to) local hours; None: any time
    frequency_cap: FrequencyCap | None = None
    prior_response: float = 1.0  # share of an offer's prior uplift this channel delivers


@dataclass
class Offer:
    name: str = ""
    description: str = ""
    cost: float = 0.0  # per offer made
    value_levels: list[str] | None = None  # classic value levels it is for; None: all
    segments: list[int] | None = None  # learned segment ids it is for; None: all
    moment: Literal["renewal", "first_use", "abnormal", "special", "any"] = "any"
    channels: list[str] = field(default_factory=list)
    prior_uplift: float = 0.0  # retention gain over the label horizon without a campaign table
    service: bool = False  # a service action: no marketing consent needed


@dataclass
class Library:
    offers: dict[str, Offer]
    channels: dict[str, Channel]
    eligibility: TagRules  # one rule per offer, named after it
    horizon_months: float = 12.0
    discount_annual: float = 0.10
    plan_days: int = 28
    special_dates: list[str] = field(default_factory=list)
    source: str = "<dict>"


TOP_KEYS = ("horizon_months", "discount_annual", "plan_days", "special_dates", "offers", "channels")


def _section(data: Any, name: str, source: str) -> dict:
    block = data.get(name)
    if not isinstance(block, dict) or not block:
        raise ConfigError(f"{source}: '{name}' must be a non-empty mapping")
    return block


def _entry(cls, section: str, name, spec, source, drop: str | None = None):
    """One named entry of a library section as ``cls`` (``drop``: a key read separately)."""
    if not isinstance(spec, dict):
        raise ConfigError(f"{source}: {section}.{name}: expected a mapping")
    fields = {k: v for k, v in spec.items() if k != drop}
    try:
        return from_dict(cls, {**fields, "name": str(name)}, prefix=f"{section}.{name}.")
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None


def parse_library(data: Any, source: str = "<dict>") -> Library:
    """Validate a parsed offers YAML into a :class:`Library`."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: top level must be a mapping with 'offers' and 'channels'")
    unknown = sorted(set(data) - set(TOP_KEYS), key=str)
    if unknown:
        raise ConfigError(f"{source}: unknown key '{unknown[0]}' (known: {', '.join(TOP_KEYS)})")
    channels: dict[str, Channel] = {}
    for name, spec in _section(data, "channels", source).items():
        ch = _entry(Channel, "channels", name, spec, source)
        where = f"{source}: channels.{name}"
        if ch.cost < 0:
            raise ConfigError(f"{where}.cost: must be >= 0, got {ch.cost}")
        if ch.capacity is not None and ch.capacity < 0:
            raise ConfigError(f"{where}.capacity: must be >= 0, got {ch.capacity}")
        if not 0 <= ch.prior_response <= 1:
            raise ConfigError(f"{where}.prior_response: must be in [0, 1], got {ch.prior_response}")
        if ch.hours is not None and not (
            len(ch.hours) == 2 and 0 <= ch.hours[0] < ch.hours[1] <= 24
        ):
            raise ConfigError(f"{where}.hours: expected [from, to] with 0 <= from < to <= 24")
        cap = ch.frequency_cap
        if cap is not None and (cap.contacts < 0 or cap.days < 1):
            raise ConfigError(f"{where}.frequency_cap: contacts >= 0 and days >= 1 needed")
        channels[str(name)] = ch

    offers: dict[str, Offer] = {}
    rules: dict[str, dict] = {}
    levels = SegmentsConfig().value_levels
    for name, spec in _section(data, "offers", source).items():
        eligible = spec.get("eligible") if isinstance(spec, dict) else None
        offer = _entry(Offer, "offers", name, spec, source, drop="eligible")
        where = f"{source}: offers.{name}"
        if offer.cost < 0:
            raise ConfigError(f"{where}.cost: must be >= 0, got {offer.cost}")
        if not -1 < offer.prior_uplift < 1:
            raise ConfigError(f"{where}.prior_uplift: must be in (-1, 1), got {offer.prior_uplift}")
        if not offer.channels:
            raise ConfigError(f"{where}.channels: name at least one channel")
        for c in offer.channels:
            if c not in channels:
                raise ConfigError(
                    f"{where}.channels: unknown channel '{c}' (known: {', '.join(channels)})"
                )
        for v in offer.value_levels or []:
            if v not in levels:
                raise ConfigError(
                    f"{where}.value_levels: unknown level '{v}' (known: {', '.join(levels)})"
                )
        offers[str(name)] = offer
        rules[str(name)] = {"when": eligible if eligible is not None else ALWAYS}
    try:
        eligibility = parse_tag_rules({"tags": rules}, source)
    except ConfigError as exc:
        msg = str(exc).replace("tags.", "offers.").replace(".when", ".eligible")
        raise ConfigError(msg) from None
    out = Library(offers, channels, eligibility, source=source)
    for key, typ in (("horizon_months", float), ("discount_annual", float), ("plan_days", int)):
        if key in data:
            v = data[key]
            if (
                isinstance(v, bool)
                or not isinstance(v, (int, float))
                or (typ is int and v != int(v))
            ):
                raise ConfigError(f"{source}: {key}: expected a number, got {v!r}")
            setattr(out, key, typ(v))
    if not 0 < out.horizon_months <= 120:
        raise ConfigError(
            f"{source}: horizon_months: must be in (0, 120], got {out.horizon_months}"
        )
    if not 0 <= out.discount_annual < 1:
        raise ConfigError(
            f"{source}: discount_annual: must be in [0, 1), got {out.discount_annual}"
        )
    if not 1 <= out.plan_days <= 366:
        raise ConfigError(f"{source}: plan_days: must be in [1, 366], got {out.plan_days}")
    dates = data.get("special_dates") or []
    if not isinstance(dates, list):
        raise ConfigError(f"{source}: special_dates: expected a list of dates")
    for d in dates:
        try:
            out.special_dates.append(
                d.isoformat()
                if isinstance(d, datetime.date)
                else datetime.date.fromisoformat(str(d)).isoformat()
            )
        except ValueError:
            raise ConfigError(f"{source}: special_dates: {d!r} is not a YYYY-MM-DD date") from None
    return out


def load_library(path: str | Path | None = None) -> Library:
    """Read and validate an offers YAML (None: the shipped ``configs/offers.yaml``)."""
    p = Path(path) if path is not None else DEFAULT_OFFERS
    data = read_yaml_file(p, "offers")
    return parse_library(data, str(p))
