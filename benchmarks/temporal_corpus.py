"""A seeded synthetic corpus of dated English news in which facts change over time, with questions.

Fictional organisations change chief executives and headquarters and report quarterly revenue
between 2018 and 2023; distractor articles mention the same entities at other times (conference
talks, plant openings, former executives). Each question lists the doc ids whose evidence states
the fact that held at the asked time. Wording varies so that questions are not keyword copies.

    from benchmarks.temporal_corpus import generate
    docs, questions = generate(seed=7, n_docs=300)
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone

from chronorag.types import Document

UTC = timezone.utc
START, END = date(2018, 1, 1), date(2023, 12, 31)
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September",
          "October", "November", "December"]
ORDINAL = {1: "first", 2: "second", 3: "third", 4: "fourth"}

_ORG_HEADS = ["Northwind", "Bluepeak", "Corvane", "Halden", "Ostrava", "Miravel", "Tessaline", "Quorra",
              "Brightwater", "Ardent", "Kestrel", "Lumora", "Varnell", "Sablecrest", "Pinehollow",
              "Duskmoor", "Everline", "Granvik", "Helioport", "Ironvale", "Juniper", "Kaldor", "Larkspur",
              "Meridel", "Norrland", "Oakhurst", "Palomar", "Redfern", "Silvan", "Thornbury"]
_ORG_TAILS = ["Energy", "Bank", "Robotics", "Foods", "Logistics", "Pharmaceuticals", "Systems", "Motors",
              "Capital", "Networks", "Materials", "Airlines", "Insurance", "Semiconductor", "Media"]
_FIRST = ["Maria", "Tom", "Aisha", "Lukas", "Priya", "Daniel", "Elena", "Kenji", "Sofia", "Marcus",
          "Ingrid", "Rafael", "Chloe", "Tobias", "Nadia", "Oscar", "Leila", "Henrik", "Grace", "Mateo",
          "Yara", "Felix", "Hana", "Victor", "Irene", "Samuel", "Zoe", "Adrian", "Mila", "Jonas"]
_LAST = ["Chen", "Berg", "Okafor", "Lindqvist", "Raman", "Moreau", "Varga", "Tanaka", "Costa", "Whitfield",
         "Novak", "Alvarez", "Dubois", "Keller", "Haddad", "Brennan", "Sato", "Ivanova", "Mendes", "Larsen",
         "Quinlan", "Petrov", "Nakamura", "Osei", "Fischer", "Romero", "Holm", "Kowalski", "Ferreira", "Aydin"]
_CITIES = ["Denver", "Austin", "Atlanta", "Seattle", "Boston", "Chicago", "Toronto", "Dublin", "Zurich",
           "Singapore", "Phoenix", "Portland", "Nashville", "Raleigh", "Minneapolis", "Pittsburgh", "Oslo",
           "Munich", "Amsterdam", "Charlotte"]


@dataclass(frozen=True)
class Question:
    qid: str
    text: str
    kind: str  # 'point', 'as_of', 'before', 'after', 'period', 'latest'
    gold_doc_ids: frozenset[str]
    answer: str
    entity: str
    asked_at: datetime | None = None  # the instant the question is about, if any
    now: datetime = datetime(2024, 1, 1, tzinfo=UTC)  # 'current' means as of this


@dataclass
class _Tenure:
    person: str
    start: date
    end: date | None
    docs: list[str] = field(default_factory=list)


@dataclass
class _Org:
    name: str
    ceos: list[_Tenure] = field(default_factory=list)
    hqs: list[_Tenure] = field(default_factory=list)  # person = city
    revenue: dict[tuple[int, int], tuple[float, list[str]]] = field(default_factory=dict)


def _dt(d: date, hour: int = 9) -> datetime:
    return datetime(d.year, d.month, d.day, hour, tzinfo=UTC)


def _month_phrase(d: date) -> str:
    return f"{MONTHS[d.month - 1]} {d.year}"


def _long_date(d: date) -> str:
    return f"{MONTHS[d.month - 1]} {d.day}, {d.year}"


class _Writer:
    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.docs: list[Document] = []

    def add(self, when: date, title: str, sentences: list[str]) -> str:
        doc_id = f"tn-{len(self.docs):05d}"
        filler = self.rng.choice([
            "The company did not comment further.", "Shares were little changed in early trading.",
            "Analysts said the move had been widely expected.", "The statement was released after markets closed.",
            "Employees were told in an internal memo.", "Further details will follow in a filing.",
        ])
        text = " ".join(sentences + [filler])
        self.docs.append(Document(doc_id, text, _dt(when, self.rng.randint(7, 18)), title=title, source="synthetic-news"))
        return doc_id


def _ceo_announcement(rng, org: str, new: str, prev: str | None, when: date) -> tuple[str, list[str]]:
    weekday = when.strftime("%A")
    opts = [
        f"{org} appointed {new} as its new chief executive on {weekday}.",
        f"{new} has been named chief executive officer of {org}, the company said.",
        f"The board of {org} picked {new} to lead the company as CEO.",
        f"{org} named {new} chief executive, effective immediately.",
        f"{new} will take the helm at {org} as chief executive, the group announced on {weekday}.",
    ]
    if prev:
        opts += [
            f"{new} succeeded {prev} as chief executive of {org} on {_long_date(when)}.",
            f"{org} said {new} would replace {prev} as CEO.",
        ]
    first = rng.choice(opts)
    extra = rng.choice([
        f"{new} previously oversaw operations in {rng.choice(_CITIES)}.",
        "Investors welcomed the decision.",
        f"The appointment ends a months-long search at {org}.",
    ])
    return f"{org} names new chief executive", [first, extra]


def _ceo_restatement(rng, org: str, person: str) -> tuple[str, list[str]]:
    opts = [
        f"{person}, chief executive of {org}, told analysts that demand remained strong.",
        f"{org}'s chief executive {person} said the company would keep investing.",
        f"Speaking to reporters, {org} CEO {person} said margins had improved.",
        f"{person}, who runs {org} as chief executive, outlined a new cost plan.",
    ]
    return f"{org} outlines strategy", [rng.choice(opts)]


def _hq_doc(rng, org: str, city: str, first: bool) -> tuple[str, list[str]]:
    if first:
        opts = [f"{org}, headquartered in {city}, employs several thousand people.",
                f"{org} is based in {city}, where it was founded.",
                f"{org} has its headquarters in {city}."]
    else:
        opts = [f"{org} moved its headquarters to {city}.",
                f"{org} said it will relocate its head office to {city}.",
                f"{org} completed the move of its headquarters to {city} this week."]
    return f"{org} and its home base", [rng.choice(opts)]


def _revenue_doc(rng, org: str, y: int, q: int, amount: float) -> tuple[str, list[str]]:
    money = f"${amount:.1f} billion"
    opts = [
        f"{org} reported revenue of {money} for the {ORDINAL[q]} quarter of {y}.",
        f"For Q{q} {y}, {org} posted revenue of {money}.",
        f"{org} said sales reached {money} in the {ORDINAL[q]} quarter of {y}.",
    ]
    return f"{org} quarterly results", [rng.choice(opts), rng.choice([
        "Profit margins narrowed slightly.", "The results beat analyst forecasts.",
        "Guidance for the next quarter was unchanged."])]


def _distractor(rng, org: _Org, others: list[_Org], when: date) -> tuple[str, list[str]]:
    city = rng.choice(_CITIES)
    other = rng.choice(others).name if others else "a rival"
    past = [t for t in org.ceos if t.end is not None and t.end < when]
    opts = [
        f"{org.name} opened a new plant near {city}.",
        f"{org.name} and {other} agreed to share research on batteries.",
        f"Shares of {org.name} rose 3 percent after an upgrade.",
        f"{org.name} hosted an investor day in {city}.",
    ]
    if past:
        t = rng.choice(past)
        opts.append(f"{t.person}, the former chief executive of {org.name}, joined the board of {other}.")
        opts.append(f"{t.person}, who led {org.name} until {t.end.year}, spoke at a conference in {city}.")
    return f"{org.name} in brief", [rng.choice(opts)]


def _rand_date(rng, a: date, b: date) -> date:
    return a + timedelta(days=rng.randint(0, max(0, (b - a).days)))


def generate(seed: int = 0, n_docs: int = 300) -> tuple[list[Document], list[Question]]:
    """A corpus of about ``n_docs`` documents and questions with gold doc ids (deterministic per seed)."""
    if n_docs < 20:
        raise ValueError("n_docs must be >= 20")
    rng = random.Random(seed)
    n_orgs = max(2, n_docs // 30)
    heads = rng.sample(_ORG_HEADS, min(n_orgs, len(_ORG_HEADS)))
    orgs = [_Org(f"{h} {rng.choice(_ORG_TAILS)}") for h in heads]
    people = [f"{f} {l}" for f in _FIRST for l in _LAST]
    rng.shuffle(people)
    w = _Writer(rng)
    for org in orgs:
        # chief executives: 2-4 tenures between 2018 and 2023
        n = rng.randint(2, 4)
        cuts = sorted(_rand_date(rng, date(2018, 6, 1), date(2023, 6, 30)) for _ in range(n - 1))
        starts = [date(2018, 1, 1) + timedelta(days=rng.randint(0, 60))] + cuts
        for i, s in enumerate(starts):
            end = starts[i + 1] if i + 1 < len(starts) else None
            org.ceos.append(_Tenure(people.pop(), s, end))
        for i, t in enumerate(org.ceos):
            prev = org.ceos[i - 1].person if i else None
            title, sents = _ceo_announcement(rng, org.name, t.person, prev, t.start)
            t.docs.append(w.add(t.start, title, sents))
            last = t.end or END
            for _ in range(rng.randint(1, 2)):
                if (last - t.start).days > 60:
                    d = _rand_date(rng, t.start + timedelta(days=30), last - timedelta(days=20))
                    title, sents = _ceo_restatement(rng, org.name, t.person)
                    t.docs.append(w.add(d, title, sents))
        # headquarters: 1-3 cities
        cities = rng.sample(_CITIES, rng.randint(1, 3))
        hq_starts = [date(2018, 1, 1)] + sorted(_rand_date(rng, date(2019, 1, 1), date(2023, 3, 1)) for _ in cities[1:])
        for i, (city, s) in enumerate(zip(cities, hq_starts)):
            end = hq_starts[i + 1] if i + 1 < len(hq_starts) else None
            t = _Tenure(city, s, end)
            when = s + timedelta(days=rng.randint(0, 20)) if i else _rand_date(rng, date(2018, 1, 5), date(2018, 3, 1))
            title, sents = _hq_doc(rng, org.name, city, first=(i == 0))
            t.docs.append(w.add(when, title, sents))
            org.hqs.append(t)
        # quarterly revenue, reported a few weeks after each quarter, for about half the quarters
        base = rng.uniform(0.8, 6.0)
        for y in range(2019, 2024):
            for q in range(1, 5):
                base *= rng.uniform(0.93, 1.1)
                if rng.random() < 0.5 or (y == 2023 and q == 4):
                    continue
                qend = date(y, 3 * q, 28)
                title, sents = _revenue_doc(rng, org.name, y, q, base)
                doc_id = w.add(qend + timedelta(days=rng.randint(20, 40)), title, sents)
                org.revenue[(y, q)] = (round(base, 1), [doc_id])
    while len(w.docs) < n_docs:
        org = rng.choice(orgs)
        d = _rand_date(rng, START, END)
        title, sents = _distractor(rng, org, [o for o in orgs if o is not org], d)
        w.add(d, title, sents)
    return w.docs, _questions(rng, orgs, w.docs)


def _tenure_at(tenures: list[_Tenure], d: date) -> _Tenure | None:
    for t in tenures:
        if t.start <= d and (t.end is None or d < t.end):
            return t
    return None


def _stated_by(t: _Tenure, docs: list[Document], until: date) -> list[str]:
    """Docs of a tenure published by ``until``: a later restatement does not show it held earlier."""
    when = {d.doc_id: d.published_at.date() for d in docs}
    return [d for d in t.docs if when[d] <= until] or t.docs[:1]


def _questions(rng: random.Random, orgs: list[_Org], docs: list[Document]) -> list[Question]:
    qs: list[Question] = []

    def add(text, kind, gold, answer, entity, asked=None):
        qs.append(Question(f"q{len(qs):04d}", text, kind, frozenset(gold), answer, entity, asked))

    for org in orgs:
        # point-in-time (a month well inside one tenure)
        for _ in range(2):
            t = rng.choice(org.ceos)
            lo, hi = t.start + timedelta(days=45), (t.end or END) - timedelta(days=45)
            if hi <= lo:
                continue
            d = _rand_date(rng, lo, hi)
            month_start = date(d.year, d.month, 1)
            if _tenure_at(org.ceos, month_start) is not t or _tenure_at(org.ceos, date(d.year, d.month, 28)) is not t:
                continue
            text = rng.choice([
                f"Who was the chief executive of {org.name} in {_month_phrase(d)}?",
                f"Who led {org.name} in {_month_phrase(d)}?",
                f"Who ran {org.name} as CEO during {_month_phrase(d)}?",
            ])
            add(text, "point", _stated_by(t, docs, date(d.year, d.month, 28)), t.person, org.name, _dt(d))
        # as of (headquarters)
        d = _rand_date(rng, date(2018, 4, 1), date(2023, 10, 1))
        t = _tenure_at(org.hqs, d)
        end_month = date(d.year, d.month, 28)
        if t is not None and _tenure_at(org.hqs, end_month) is t:
            add(f"As of {_month_phrase(d)}, where was {org.name} headquartered?", "as_of",
                _stated_by(t, docs, end_month), t.person, org.name, _dt(d))
        # before / after a succession
        for i in range(1, len(org.ceos)):
            prev, new = org.ceos[i - 1], org.ceos[i]
            add(rng.choice([f"Who was the CEO of {org.name} before {new.person} took over?",
                            f"Who ran {org.name} before {new.person} became chief executive?"]),
                "before", _stated_by(prev, docs, new.start), prev.person, org.name, _dt(new.start))
            add(rng.choice([f"Who became chief executive of {org.name} after {prev.person} left?",
                            f"After {prev.person} stepped down, who led {org.name}?"]),
                "after", new.docs, new.person, org.name, _dt(new.start))
        # period (fiscal quarter, not the report date)
        if org.revenue:
            (y, q), (amount, ids) = rng.choice(sorted(org.revenue.items()))
            add(rng.choice([f"What was {org.name}'s revenue in the {ORDINAL[q]} quarter of {y}?",
                            f"How much did {org.name} take in during Q{q} {y}?"]),
                "period", ids, f"${amount:.1f} billion", org.name, _dt(date(y, 3 * q - 2, 1)))
        # latest
        cur = org.ceos[-1]
        add(rng.choice([f"Who is the current chief executive of {org.name}?", f"Who leads {org.name} now?"]),
            "latest", cur.docs, cur.person, org.name, None)
    return qs
