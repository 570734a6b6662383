"""The demo's data: a drifting stream of shop visits, made locally with numpy.

Each row is one visit, and the label says whether the visitor bought
(``yes``/``no``). The features are mixed, as ETL data is:

| feature   | kind                      | role |
|---|---|---|
| price     | number, 0-10 (then 0-6)   | in the rule |
| wait_days | number, 0-10              | in the rule |
| rating    | number, 0-10              | noise: not in the rule (as SEA's third attribute) |
| channel   | string: web, store, phone, partner | in the rule: store +1, phone -1 |
| member    | boolean                   | noise |

The rule is SEA-like: a visitor buys when ``price + wait_days +
CHANNEL_EFFECT[channel] <= threshold``; then ``LABEL_NOISE`` (10%) of the
labels are flipped, so no model can score much above 0.90.

Three phases, in order:

1. ``stable``: threshold 10, the inputs as above.
2. ``concept change``: the threshold drops to 7 at once (customers got
   pickier): the same inputs now get other labels. About one row in four
   changes its label, so a model of the old rule drops from ~0.90 to ~0.70.
3. ``input shift``: a sale: every price drops by 40% (U(0, 6) instead of
   U(0, 10)) and the rule of phase 2 holds: the inputs drift, the labelling
   does not.

Everything is a pure function of (batches, batch_size, seed).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

LABEL_NOISE = 0.10
CHANNELS = ("web", "store", "phone", "partner")
CHANNEL_SHARES = (0.5, 0.25, 0.15, 0.10)
CHANNEL_EFFECT = {"web": 0.0, "store": 1.0, "phone": -1.0, "partner": 0.0}
#: The labelling rule's threshold before and after the concept change.
THRESHOLD_BEFORE = 10.0
THRESHOLD_AFTER = 7.0
#: What prices are multiplied by in the input shift.
PRICE_SCALE = 0.6
#: Where the phases start, as fractions of the batches.
CONCEPT_CHANGE_AT = 0.4
INPUT_SHIFT_AT = 0.7


@dataclass(frozen=True)
class Phase:
    name: str
    first_batch: int          # 1-based, inclusive
    last_batch: int           # inclusive
    threshold: float
    price_scale: float
    description: str

    @property
    def batches(self) -> range:
        return range(self.first_batch, self.last_batch + 1)


@dataclass
class Batch:
    number: int               # 1-based
    phase: Phase
    features: list[dict]
    labels: list[str]
    #: The labels before the noise was added (what the rule says).
    clean_labels: list[str]


def phases(batches: int) -> list[Phase]:
    """The three phases for a run of ``batches`` batches (at least 3)."""
    if batches < 3:
        raise ValueError("the demo needs at least 3 batches, one per phase")
    change = min(max(2, round(CONCEPT_CHANGE_AT * batches) + 1), batches - 1)
    shift = min(max(change + 1, round(INPUT_SHIFT_AT * batches) + 1), batches)
    return [
        Phase("stable", 1, change - 1, THRESHOLD_BEFORE, 1.0,
              f"visitors buy when price + wait_days + channel effect <= {THRESHOLD_BEFORE:g}"),
        Phase("concept change", change, shift - 1, THRESHOLD_AFTER, 1.0,
              f"the rule's threshold drops to {THRESHOLD_AFTER:g}; the inputs stay"),
        Phase("input shift", shift, batches, THRESHOLD_AFTER, PRICE_SCALE,
              f"a sale: prices drop by {100 * (1 - PRICE_SCALE):.0f}%; the rule stays"),
    ]


def phase_of(batch: int, all_phases: list[Phase]) -> Phase:
    for phase in all_phases:
        if phase.first_batch <= batch <= phase.last_batch:
            return phase
    raise ValueError(f"batch {batch} is outside the run")


def rule(price, wait_days, channel, threshold: float) -> np.ndarray:
    """True where the visitor buys (before noise)."""
    effect = np.array([CHANNEL_EFFECT[c] for c in channel])
    return np.asarray(price) + np.asarray(wait_days) + effect <= threshold


def make_batch(number: int, size: int, phase: Phase, seed: int) -> Batch:
    """Batch ``number`` of the stream: its own random state from (seed,
    number), so any batch can be made alone and the stream is reproducible."""
    rng = np.random.default_rng([seed, number])
    # Rounded as stored, so that the rule holds for the rows as written.
    price = np.round(rng.uniform(0, 10, size) * phase.price_scale, 3)
    wait_days = np.round(rng.uniform(0, 10, size), 3)
    rating = np.round(rng.uniform(0, 10, size), 3)
    channel = rng.choice(CHANNELS, size=size, p=CHANNEL_SHARES)
    member = rng.random(size) < 0.3
    clean = rule(price, wait_days, channel, phase.threshold)
    noisy = clean ^ (rng.random(size) < LABEL_NOISE)
    features = [
        {"price": float(p), "wait_days": float(w), "rating": float(r), "channel": str(c),
         "member": bool(m)}
        for p, w, r, c, m in zip(price, wait_days, rating, channel, member)
    ]
    as_text = lambda values: ["yes" if v else "no" for v in values]  # noqa: E731
    return Batch(number, phase, features, as_text(noisy), as_text(clean))


def stream(batches: int, size: int, seed: int):
    """The batches of a run, in order (a generator: made as they are needed)."""
    all_phases = phases(batches)
    for number in range(1, batches + 1):
        yield make_batch(number, size, phase_of(number, all_phases), seed)
