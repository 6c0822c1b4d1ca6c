#!/usr/bin/env python3
"""Generate the steerlab "reasoning vs memorisation" prompt sets.

What
    Writes two JSONL files next to this script (or into ``--out DIR``):

    * ``reasoning.jsonl``    -- questions whose answer must be *worked out*:
      multi-step arithmetic word problems, comparisons, unit conversions,
      simple logic and number sequences.  Generated from templates.
    * ``memorisation.jsonl`` -- questions answered by *recall*: capitals,
      chemical symbols, authors, years of historical events and general facts.
      Taken from the hand-written fact tables at the bottom of this file.

    Each line is one JSON object with exactly the keys
    ``id, kind, category, question, answer, aliases, answer_type, choices,
    split`` (see ``data/README.md`` for the schema).

Why
    steerlab builds a "reasoning minus memorisation" steering direction in the
    spirit of Hong et al. (2025), who contrast the activations of reasoning and
    memorisation prompts.  The ``extract`` split is used to build steering
    vectors; the held-out ``eval`` split is used to measure accuracy.

Determinism
    All randomness comes from ``random.Random`` instances seeded with strings
    derived from ``SEED`` (string seeds are hashed with SHA-512 by ``random``,
    so they do not depend on ``PYTHONHASHSEED``).  Running the script twice
    gives byte-identical files.  Regenerate with::

        python data/make_prompt_sets.py            # writes into data/
        python data/make_prompt_sets.py --out DIR  # writes into DIR

    Pure standard library, no network access.

Licence
    The facts are general knowledge, written for this project; the templates
    and generated questions are part of steerlab and share its licence
    (Apache-2.0).
"""

from __future__ import annotations

import argparse
import json
import random
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

SEED = 20250601
REASONING_PER_CATEGORY = 100
REASONING_CATEGORIES = ("arithmetic_word", "comparison", "unit_conversion", "logic", "sequence")
# fmt: off
KEYS = ("id", "kind", "category", "question", "answer", "aliases", "answer_type", "choices",
        "split")
NAMES = ("Alice", "Bob", "Carol", "Dan", "Emma", "Farid", "Grace", "Hugo", "Ines", "Jack",
         "Kemal", "Lena", "Maria", "Nikhil", "Olga", "Pedro", "Quinn", "Rosa", "Sam", "Tara",
         "Umar", "Vera", "Wei", "Yusuf", "Zoe")
NONSENSE = ("blickets", "daxes", "wugs", "feps", "zorps", "glims", "toves", "snerks", "quobs",
            "vints")
# fmt: on
COLOURS = ("red", "blue", "green", "yellow", "purple", "orange", "striped", "spotted")

# An item before ids and splits are assigned: (category, question, answer, aliases, answer_type,
# choices).
Item = tuple[str, str, str, list[str], str, list[str]]


def fmt_num(x: int | Decimal) -> str:
    """Plain decimal string without exponent or trailing zeros: 4.50 -> "4.5", 100 -> "100"."""
    d = Decimal(x).normalize()
    return format(d, "f")


# --------------------------------------------------------------------------------------------
# Reasoning generators.  Each takes a seeded Random and returns one Item.
# --------------------------------------------------------------------------------------------


# Word problems: (template, {variable: inclusive range}, answer).  Variables are drawn
# independently and the draw is rejected unless the answer is a positive whole number, which
# keeps the constraints (no negative stock, exact sharing, enough money) in one place.
# Counts before a plural noun start at 2 so the text stays grammatical.
WORD_PROBLEMS: tuple[tuple[str, dict[str, tuple[int, int]], Callable[..., int]], ...] = (
    (
        "{n} has {a} apples. {n} buys {b} more apples and then gives {c} apples to a friend. "
        "How many apples does {n} have now?",
        {"a": (5, 30), "b": (2, 20), "c": (2, 40)},
        lambda a, b, c: a + b - c,
    ),
    (
        "A box holds {a} pencils. {n} buys {b} boxes and then loses {c} pencils. "
        "How many pencils does {n} have left?",
        {"a": (3, 12), "b": (2, 9), "c": (2, 30)},
        lambda a, b, c: a * b - c,
    ),
    (
        "A bus has {a} passengers. At the first stop, {b} passengers get off and {c} get on. "
        "How many passengers are on the bus now?",
        {"a": (10, 40), "b": (2, 30), "c": (2, 20)},
        lambda a, b, c: a - b + c,
    ),
    (
        "{n} earns {a} dollars a day for {b} days and then spends {c} dollars. "
        "How many dollars does {n} have left?",
        {"a": (5, 20), "b": (2, 7), "c": (2, 60)},
        lambda a, b, c: a * b - c,
    ),
    (
        "{a} friends share {b} sweets equally. Each friend then eats {c} of their sweets. "
        "How many sweets does each friend have left?",
        {"a": (2, 6), "b": (6, 60), "c": (1, 9)},
        lambda a, b, c: b // a - c if b % a == 0 else 0,
    ),
    (
        "Pens cost {a} dollars each. {n} buys {b} pens and pays with a {c}-dollar note. "
        "How many dollars of change does {n} get?",
        {"a": (2, 9), "b": (2, 5), "c": (20, 20)},
        lambda a, b, c: c - a * b,
    ),
    (
        "Pens cost {a} dollars each. {n} buys {b} pens and pays with a {c}-dollar note. "
        "How many dollars of change does {n} get?",
        {"a": (5, 9), "b": (3, 5), "c": (50, 50)},
        lambda a, b, c: c - a * b,
    ),
    (
        "A farmer plants {a} rows of {b} trees and then plants {c} more trees. "
        "How many trees has the farmer planted in total?",
        {"a": (2, 9), "b": (3, 12), "c": (2, 20)},
        lambda a, b, c: a * b + c,
    ),
    (
        "A baker makes {a} trays of {b} muffins. The baker sells {c} muffins in the morning "
        "and {d} in the afternoon. How many muffins are left?",
        {"a": (2, 6), "b": (6, 12), "c": (2, 40), "d": (2, 30)},
        lambda a, b, c, d: a * b - c - d,
    ),
    (
        "A book has {c} pages. {n} reads {a} pages a day for {b} days. "
        "How many pages are left to read?",
        {"a": (5, 20), "b": (2, 7), "c": (20, 180)},
        lambda a, b, c: c - a * b,
    ),
    (
        "A museum ticket costs {a} dollars for an adult and {b} dollars for a child. "
        "How many dollars do {c} adults and {d} children pay in total?",
        {"a": (9, 15), "b": (2, 8), "c": (2, 4), "d": (2, 5)},
        lambda a, b, c, d: a * c + b * d,
    ),
    (
        "{n} has {a} marbles, wins enough to double that number, and then loses {c}. "
        "How many marbles does {n} have now?",
        {"a": (3, 15), "c": (1, 25)},
        lambda a, c: 2 * a - c,
    ),
)


def gen_arithmetic_word(rng: random.Random) -> Item:
    """Two- or three-step word problems with small whole numbers."""
    template, ranges, answer = rng.choice(WORD_PROBLEMS)
    while True:  # rejection sampling; every template has plenty of valid draws
        values = {k: rng.randint(lo, hi) for k, (lo, hi) in ranges.items()}
        ans = answer(**values)
        if ans > 0:
            break
    q = template.format(n=rng.choice(NAMES), **values)
    return ("arithmetic_word", q, fmt_num(ans), [], "number", [])


def gen_comparison(rng: random.Random) -> Item:
    """Which-is-larger/smaller (integers, decimals, three-way) and yes/no inequalities."""
    t = rng.randrange(5)
    if t in (0, 1, 2):
        if t == 0:  # two integers
            vals = [fmt_num(v) for v in rng.sample(range(10, 100), 2)]
        elif t == 1:  # tenths vs hundredths, a classic trap (0.7 vs 0.65)
            a = Decimal(rng.randint(1, 9)) / 10
            b = a + Decimal(rng.choice([-1, 1]) * rng.randint(1, 9)) / 100
            vals = [fmt_num(a), fmt_num(b)]
            rng.shuffle(vals)
        else:  # three integers
            vals = [fmt_num(v) for v in rng.sample(range(10, 100), 3)]
        want_max = rng.random() < 0.5
        pick = max if want_max else min
        answer = pick(vals, key=Decimal)
        if len(vals) == 2:
            word = "larger" if want_max else "smaller"
            q = f"Which is {word}, {vals[0]} or {vals[1]}?"
        else:
            word = "largest" if want_max else "smallest"
            q = f"Which is the {word} of {vals[0]}, {vals[1]} and {vals[2]}?"
        return ("comparison", q, answer, [], "choice", vals)
    yes = rng.random() < 0.5
    delta = rng.randint(1, 10)
    if t == 3:
        a, b = rng.randint(3, 12), rng.randint(3, 12)
        value, op, rel = a * b, "x", "greater"
    else:
        a, b = rng.randint(10, 60), rng.randint(10, 60)
        value, op, rel = a + b, "+", "less"
    # "greater than c" is true when c < value; "less than c" is true when c > value.
    sign = -1 if (rel == "greater") == yes else 1
    c = value + sign * delta
    q = f"Is {a} {op} {b} {rel} than {c}? Answer yes or no."
    return ("comparison", q, "yes" if yes else "no", [], "choice", ["yes", "no"])


# (larger unit, smaller unit, smaller units per larger unit, allow fractional amounts)
UNITS = (
    ("hours", "minutes", 60, True),
    ("minutes", "seconds", 60, False),
    ("hours", "seconds", 3600, False),
    ("days", "hours", 24, False),
    ("weeks", "days", 7, False),
    ("years", "months", 12, True),
    ("metres", "centimetres", 100, True),
    ("kilometres", "metres", 1000, True),
    ("centimetres", "millimetres", 10, True),
    ("metres", "millimetres", 1000, True),
    ("kilograms", "grams", 1000, True),
    ("tonnes", "kilograms", 1000, True),
    ("litres", "millilitres", 1000, True),
)


def gen_unit_conversion(rng: random.Random) -> Item:
    """Convert between a larger and a smaller unit, in either direction."""
    big, small, factor, frac = rng.choice(UNITS)
    amount = Decimal(rng.randint(2, 12))
    if frac and rng.random() < 0.4:
        amount += Decimal("0.5")
    if rng.random() < 0.5:  # large -> small: "How many minutes are in 3 hours?"
        q = f"How many {small} are in {fmt_num(amount)} {big}?"
        ans = amount * factor
    else:  # small -> large: "How many hours are in 180 minutes?"
        q = f"How many {big} are in {fmt_num(amount * factor)} {small}?"
        ans = amount
    return ("unit_conversion", q, fmt_num(ans), [], "number", [])


# (comparative, superlative of the top of the order, superlative of the bottom)
RELATIONS = (
    ("taller", "tallest", "shortest"),
    ("older", "oldest", "youngest"),
    ("faster", "fastest", "slowest"),
    ("heavier", "heaviest", "lightest"),
)


def gen_logic(rng: random.Random) -> Item:
    """Three-person orderings, parity and syllogism-like yes/no questions."""
    t = rng.randrange(4)
    if t == 0:  # ordering: top > mid > bot, statements in random order
        top, mid, bot = rng.sample(NAMES, 3)
        comp, sup_top, sup_bot = rng.choice(RELATIONS)
        facts = [f"{top} is {comp} than {mid}.", f"{mid} is {comp} than {bot}."]
        rng.shuffle(facts)
        kind = rng.randrange(3)
        if kind == 0:
            q, ans = f"Who is the {sup_top}?", top
        elif kind == 1:
            q, ans = f"Who is the {sup_bot}?", bot
        else:
            yes = rng.random() < 0.5
            a, b = (top, bot) if yes else (bot, top)
            q, ans = f"Is {a} {comp} than {b}? Answer yes or no.", "yes" if yes else "no"
            return ("logic", f"{' '.join(facts)} {q}", ans, [], "choice", ["yes", "no"])
        people = [top, mid, bot]
        rng.shuffle(people)  # so the option order does not give the answer away
        return ("logic", f"{' '.join(facts)} {q}", ans, [], "choice", people)
    if t == 1:  # parity of a sum or product
        a, b = rng.randint(3, 60), rng.randint(3, 60)
        if rng.random() < 0.5:
            q = f"Is the sum of {a} and {b} even or odd?"
            ans = "even" if (a + b) % 2 == 0 else "odd"
            return ("logic", q, ans, [], "choice", ["even", "odd"])
        # product: pick the answer first so yes/no stay balanced (odd x odd is the only odd case)
        yes = rng.random() < 0.5
        a = rng.choice(range(3, 14, 2))
        b = rng.choice(range(3, 14, 2)) if yes else rng.choice(range(2, 15, 2))
        if rng.random() < 0.5:
            a, b = b, a
        q = f"Is {a} x {b} an odd number? Answer yes or no."
        return ("logic", q, "yes" if (a * b) % 2 else "no", [], "choice", ["yes", "no"])
    # syllogisms over nonsense words, so world knowledge cannot help
    x, y = rng.sample(NONSENSE, 2)
    colour, name = rng.choice(COLOURS), rng.choice(NAMES)
    one = x[:-2] if x.endswith("xes") else x[:-1]  # singular: daxes -> dax, wugs -> wug
    form = rng.randrange(4)
    if form == 0:
        q, ans = f"All {x} are {colour}. {name} is a {one}. Is {name} {colour}?", "yes"
    elif form == 1:
        q, ans = f"All {x} are {colour}. {name} is {colour}. Must {name} be a {one}?", "no"
    elif form == 2:
        q, ans = f"No {x} are {colour}. {name} is a {one}. Is {name} {colour}?", "no"
    else:
        q, ans = f"All {x} are {y}. All {y} are {colour}. Are all {x} {colour}?", "yes"
    return ("logic", q + " Answer yes or no.", ans, [], "choice", ["yes", "no"])


def gen_sequence(rng: random.Random) -> Item:
    """'What comes next' / 'What number is missing' for simple integer sequences."""
    t = rng.randrange(6)
    if t == 0:  # increasing arithmetic
        a, d = rng.randint(1, 20), rng.randint(2, 9)
        seq = [a + i * d for i in range(5)]
    elif t == 1:  # decreasing arithmetic
        a, d = rng.randint(50, 99), rng.randint(2, 9)
        seq = [a - i * d for i in range(5)]
    elif t == 2:  # geometric
        a, k = rng.randint(1, 6), rng.choice([2, 3])
        seq = [a * k**i for i in range(5)]
    elif t == 3:  # alternating steps +x, +y
        a, x, y = rng.randint(1, 10), rng.randint(1, 5), rng.randint(6, 9)
        seq = [a]
        for i in range(4):
            seq.append(seq[-1] + (x if i % 2 == 0 else y))
    elif t == 4:  # Fibonacci-like; distinct seeds, as 5, 5, 10, 15 also reads as "+5"
        seq = rng.sample(range(1, 7), 2)
        while len(seq) < 5:
            seq.append(seq[-1] + seq[-2])
    else:  # missing middle term of an arithmetic sequence
        a, d = rng.randint(1, 30), rng.randint(2, 12)
        seq = [a + i * d for i in range(5)]
        hole = rng.randint(1, 3)
        shown = [str(v) if i != hole else "?" for i, v in enumerate(seq)]
        q = f"What number is missing: {', '.join(shown)}?"
        return ("sequence", q, fmt_num(seq[hole]), [], "number", [])
    q = f"What comes next: {', '.join(str(v) for v in seq[:4])}?"
    return ("sequence", q, fmt_num(seq[4]), [], "number", [])


GENERATORS: dict[str, Callable[[random.Random], Item]] = {
    "arithmetic_word": gen_arithmetic_word,
    "comparison": gen_comparison,
    "unit_conversion": gen_unit_conversion,
    "logic": gen_logic,
    "sequence": gen_sequence,
}


def build_reasoning(seen: set[str]) -> list[Item]:
    items: list[Item] = []
    for cat in REASONING_CATEGORIES:
        rng = random.Random(f"{SEED}:reasoning:{cat}")
        count, attempts = 0, 0
        while count < REASONING_PER_CATEGORY:
            attempts += 1
            if attempts > 100 * REASONING_PER_CATEGORY:
                raise RuntimeError(f"cannot generate {REASONING_PER_CATEGORY} unique {cat}")
            item = GENERATORS[cat](rng)
            key = item[1].casefold()
            if key in seen:
                continue
            seen.add(key)
            items.append(item)
            count += 1
    return items


# --------------------------------------------------------------------------------------------
# Memorisation items from the fact tables.
# --------------------------------------------------------------------------------------------


def parse_table(text: str) -> list[list[str]]:
    """Rows of ' | '-separated fields; blank lines and '#' comments are ignored."""
    rows = []
    for line in text.strip().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            rows.append([f.strip() for f in line.split("|")])
    return rows


def split_aliases(field: str) -> list[str]:
    return [a.strip() for a in field.split(";") if a.strip()]


def answer_type_of(answer: str) -> str:
    try:
        Decimal(answer)
    except ArithmeticError:
        return "text"
    return "number"


def build_memorisation(seen: set[str]) -> list[Item]:
    # (category, table, question template, number of leading fields the template uses);
    # the next field is the answer and an optional last field lists aliases.
    sources = (
        ("capital", CAPITALS, "What is the capital of {0}?", 1),
        ("chemical_symbol", ELEMENTS, "What is the chemical symbol for {0}?", 1),
        ("chemical_symbol", SYMBOL_TO_ELEMENT, "Which element has the chemical symbol {0}?", 1),
        ("author", AUTHORS, 'Who wrote the {0} "{1}"?', 2),
        ("year", YEARS, "{0}", 1),
        ("fact", FACTS, "{0}", 1),
    )
    items: list[Item] = []
    for cat, table, template, k in sources:
        for row in parse_table(table):
            q, ans = template.format(*row[:k]), row[k]
            aliases = split_aliases(row[k + 1]) if len(row) > k + 1 else []
            aliases = [a for a in dict.fromkeys(aliases) if a.casefold() != ans.casefold()]
            if q.casefold() in seen:
                raise ValueError(f"duplicate question: {q}")
            if not q.endswith("?") or len(row) > k + 2:
                raise ValueError(f"malformed row: {row}")
            seen.add(q.casefold())
            items.append((cat, q, ans, aliases, answer_type_of(ans), []))
    return items


# --------------------------------------------------------------------------------------------
# Ids, splits and output.
# --------------------------------------------------------------------------------------------


def finalise(items: list[Item], kind: str, prefix: str) -> list[dict]:
    """Assign ids in generation order and a stratified ~50/50 extract/eval split."""
    records = []
    for i, (cat, q, ans, aliases, atype, choices) in enumerate(items, start=1):
        records.append(
            {
                "id": f"{prefix}-{i:04d}",
                "kind": kind,
                "category": cat,
                "question": q,
                "answer": ans,
                "aliases": aliases,
                "answer_type": atype,
                "choices": choices,
                "split": "",
            }
        )
    categories = list(dict.fromkeys(r["category"] for r in records))
    for cat in categories:
        members = [r for r in records if r["category"] == cat]
        random.Random(f"{SEED}:split:{kind}:{cat}").shuffle(members)
        half = (len(members) + 1) // 2
        for j, r in enumerate(members):
            r["split"] = "extract" if j < half else "eval"
    records.sort(key=lambda r: r["id"])
    for r in records:
        assert tuple(r) == KEYS, r
    return records


def write_jsonl(path: Path, records: list[dict]) -> None:
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    path.write_bytes(text.encode("utf-8"))


def summarise(name: str, records: list[dict]) -> None:
    print(f"{name}: {len(records)} items")
    for cat in dict.fromkeys(r["category"] for r in records):
        rs = [r for r in records if r["category"] == cat]
        ext = sum(r["split"] == "extract" for r in rs)
        print(f"  {cat:<16} {len(rs):>4}  extract={ext:<4} eval={len(rs) - ext}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out",
        type=Path,
        default=Path(__file__).resolve().parent,
        help="output directory (default: the directory of this script)",
    )
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)

    seen: set[str] = set()  # casefolded question texts across BOTH files
    reasoning = finalise(build_reasoning(seen), "reasoning", "reason")
    memorisation = finalise(build_memorisation(seen), "memorisation", "memo")
    write_jsonl(args.out / "reasoning.jsonl", reasoning)
    write_jsonl(args.out / "memorisation.jsonl", memorisation)
    summarise("reasoning.jsonl", reasoning)
    summarise("memorisation.jsonl", memorisation)


# --------------------------------------------------------------------------------------------
# Fact tables (general knowledge, written for this project).  Format: fields separated by
# " | ", aliases separated by ";".  Countries with disputed or split capitals (e.g. Bolivia,
# South Africa, Israel, the Netherlands, Switzerland, Sri Lanka, Benin, Tanzania, Cote d'Ivoire,
# Malaysia, Myanmar, Kazakhstan, Indonesia, Yemen, Sudan) are deliberately left out, as is
# Georgia (country vs US state).
# --------------------------------------------------------------------------------------------

CAPITALS = """
# country (as used in the question) | capital | aliases
France | Paris
Germany | Berlin
Italy | Rome
Spain | Madrid
Portugal | Lisbon
the United Kingdom | London
Ireland | Dublin
Belgium | Brussels
Austria | Vienna
Poland | Warsaw
the Czech Republic | Prague
Slovakia | Bratislava
Hungary | Budapest
Romania | Bucharest
Bulgaria | Sofia
Greece | Athens
Serbia | Belgrade
Croatia | Zagreb
Slovenia | Ljubljana
Bosnia and Herzegovina | Sarajevo
North Macedonia | Skopje
Albania | Tirana | Tirane
Montenegro | Podgorica
Denmark | Copenhagen
Norway | Oslo
Sweden | Stockholm
Finland | Helsinki
Iceland | Reykjavik | Reykjavík
Estonia | Tallinn
Latvia | Riga
Lithuania | Vilnius
Belarus | Minsk
Ukraine | Kyiv | Kiev
Moldova | Chisinau | Chișinău
Russia | Moscow
Turkey | Ankara
Cyprus | Nicosia
Malta | Valletta
China | Beijing | Peking
Japan | Tokyo
South Korea | Seoul
North Korea | Pyongyang
Mongolia | Ulaanbaatar | Ulan Bator
India | New Delhi
Pakistan | Islamabad
Bangladesh | Dhaka
Nepal | Kathmandu
Bhutan | Thimphu
Afghanistan | Kabul
Iran | Tehran
Iraq | Baghdad
Saudi Arabia | Riyadh
Jordan | Amman
Lebanon | Beirut
Syria | Damascus
Qatar | Doha
the United Arab Emirates | Abu Dhabi
Oman | Muscat
Bahrain | Manama
Thailand | Bangkok
Vietnam | Hanoi
Cambodia | Phnom Penh
Laos | Vientiane
the Philippines | Manila
Uzbekistan | Tashkent
Kyrgyzstan | Bishkek
Tajikistan | Dushanbe
Turkmenistan | Ashgabat
Armenia | Yerevan
Azerbaijan | Baku
Egypt | Cairo
Kenya | Nairobi
Ethiopia | Addis Ababa
Nigeria | Abuja
Ghana | Accra
Senegal | Dakar
Morocco | Rabat
Algeria | Algiers
Tunisia | Tunis
Libya | Tripoli
Uganda | Kampala
Rwanda | Kigali
Zimbabwe | Harare
Zambia | Lusaka
Angola | Luanda
Mozambique | Maputo
Namibia | Windhoek
Botswana | Gaborone
Madagascar | Antananarivo
Mali | Bamako
Niger | Niamey
Chad | N'Djamena | Ndjamena
Cameroon | Yaoundé | Yaounde
Somalia | Mogadishu
Malawi | Lilongwe
Sierra Leone | Freetown
Liberia | Monrovia
Guinea | Conakry
Burkina Faso | Ouagadougou
Gabon | Libreville
Eritrea | Asmara
Mauritania | Nouakchott
Togo | Lomé | Lome
the United States | Washington, D.C. | Washington; Washington D.C.; Washington DC
Canada | Ottawa
Mexico | Mexico City
Cuba | Havana
Jamaica | Kingston
Haiti | Port-au-Prince
the Dominican Republic | Santo Domingo
Guatemala | Guatemala City
Costa Rica | San José | San Jose
Panama | Panama City
Nicaragua | Managua
El Salvador | San Salvador
Honduras | Tegucigalpa
Belize | Belmopan
the Bahamas | Nassau
Trinidad and Tobago | Port of Spain | Port-of-Spain
Colombia | Bogotá | Bogota
Venezuela | Caracas
Ecuador | Quito
Peru | Lima
Brazil | Brasília | Brasilia
Argentina | Buenos Aires
Chile | Santiago | Santiago de Chile
Uruguay | Montevideo
Paraguay | Asunción | Asuncion
Guyana | Georgetown
Suriname | Paramaribo
Australia | Canberra
New Zealand | Wellington
Fiji | Suva
Papua New Guinea | Port Moresby
Samoa | Apia
"""

ELEMENTS = """
# element name (IUPAC spelling) | symbol  -- elements 1-86 plus radium, uranium, plutonium
hydrogen | H
helium | He
lithium | Li
beryllium | Be
boron | B
carbon | C
nitrogen | N
oxygen | O
fluorine | F
neon | Ne
sodium | Na
magnesium | Mg
aluminium | Al
silicon | Si
phosphorus | P
sulfur | S
chlorine | Cl
argon | Ar
potassium | K
calcium | Ca
scandium | Sc
titanium | Ti
vanadium | V
chromium | Cr
manganese | Mn
iron | Fe
cobalt | Co
nickel | Ni
copper | Cu
zinc | Zn
gallium | Ga
germanium | Ge
arsenic | As
selenium | Se
bromine | Br
krypton | Kr
rubidium | Rb
strontium | Sr
yttrium | Y
zirconium | Zr
niobium | Nb
molybdenum | Mo
technetium | Tc
ruthenium | Ru
rhodium | Rh
palladium | Pd
silver | Ag
cadmium | Cd
indium | In
tin | Sn
antimony | Sb
tellurium | Te
iodine | I
xenon | Xe
caesium | Cs
barium | Ba
lanthanum | La
cerium | Ce
praseodymium | Pr
neodymium | Nd
promethium | Pm
samarium | Sm
europium | Eu
gadolinium | Gd
terbium | Tb
dysprosium | Dy
holmium | Ho
erbium | Er
thulium | Tm
ytterbium | Yb
lutetium | Lu
hafnium | Hf
tantalum | Ta
tungsten | W
rhenium | Re
osmium | Os
iridium | Ir
platinum | Pt
gold | Au
mercury | Hg
thallium | Tl
lead | Pb
bismuth | Bi
polonium | Po
astatine | At
radon | Rn
radium | Ra
uranium | U
plutonium | Pu
"""

SYMBOL_TO_ELEMENT = """
# symbol | element | aliases   -- symbols that do not obviously spell the English name
Na | sodium
K | potassium
Fe | iron
Cu | copper
Ag | silver
Au | gold
Hg | mercury
Pb | lead
Sn | tin
Sb | antimony
W | tungsten | wolfram
Si | silicon
"""

AUTHORS = """
# form | title | author | aliases  (bare surnames only where they are distinctive)
novel | Pride and Prejudice | Jane Austen | Austen
novel | Sense and Sensibility | Jane Austen | Austen
novel | Nineteen Eighty-Four | George Orwell | Orwell; Eric Blair; Eric Arthur Blair
novella | Animal Farm | George Orwell | Orwell; Eric Blair; Eric Arthur Blair
play | Hamlet | William Shakespeare | Shakespeare
play | Macbeth | William Shakespeare | Shakespeare
play | Romeo and Juliet | William Shakespeare | Shakespeare
play | King Lear | William Shakespeare | Shakespeare
novel | Moby-Dick | Herman Melville | Melville
novel | War and Peace | Leo Tolstoy | Tolstoy
novel | Anna Karenina | Leo Tolstoy | Tolstoy
novel | Crime and Punishment | Fyodor Dostoevsky | Dostoevsky; Dostoyevsky
novel | The Brothers Karamazov | Fyodor Dostoevsky | Dostoevsky; Dostoyevsky
novel | Don Quixote | Miguel de Cervantes | Cervantes
novel | The Great Gatsby | F. Scott Fitzgerald | Fitzgerald; Scott Fitzgerald
novel | To Kill a Mockingbird | Harper Lee
novel | The Catcher in the Rye | J. D. Salinger | Salinger; J.D. Salinger
novel | Brave New World | Aldous Huxley | Huxley
novel | Frankenstein | Mary Shelley | Mary Wollstonecraft Shelley
novel | Dracula | Bram Stoker | Stoker
novel | Jane Eyre | Charlotte Brontë | Charlotte Bronte
novel | Wuthering Heights | Emily Brontë | Emily Bronte
novel | Great Expectations | Charles Dickens | Dickens
novel | Oliver Twist | Charles Dickens | Dickens
novel | A Tale of Two Cities | Charles Dickens | Dickens
novella | A Christmas Carol | Charles Dickens | Dickens
novel | The Adventures of Tom Sawyer | Mark Twain | Twain; Samuel Clemens
novel | Adventures of Huckleberry Finn | Mark Twain | Twain; Samuel Clemens
epic poem | The Odyssey | Homer
epic poem | The Iliad | Homer
poem | The Divine Comedy | Dante Alighieri | Dante
novel | Les Misérables | Victor Hugo | Hugo
novel | The Hunchback of Notre-Dame | Victor Hugo | Hugo
novel | The Count of Monte Cristo | Alexandre Dumas | Dumas
novel | The Three Musketeers | Alexandre Dumas | Dumas
novel | Madame Bovary | Gustave Flaubert | Flaubert
novella | The Old Man and the Sea | Ernest Hemingway | Hemingway
novel | A Farewell to Arms | Ernest Hemingway | Hemingway
novel | The Sun Also Rises | Ernest Hemingway | Hemingway
novel | The Lord of the Rings | J. R. R. Tolkien | Tolkien; J.R.R. Tolkien
novel | The Hobbit | J. R. R. Tolkien | Tolkien; J.R.R. Tolkien
novel | Harry Potter and the Philosopher's Stone | J. K. Rowling | Rowling; J.K. Rowling
novel | The Lion, the Witch and the Wardrobe | C. S. Lewis | C.S. Lewis
novel | Alice's Adventures in Wonderland | Lewis Carroll | Carroll; Charles Dodgson
novel | Treasure Island | Robert Louis Stevenson | Stevenson; R. L. Stevenson
novella | Strange Case of Dr Jekyll and Mr Hyde | Robert Louis Stevenson | Stevenson
novel | The Picture of Dorian Gray | Oscar Wilde | Wilde
play | The Importance of Being Earnest | Oscar Wilde | Wilde
novel | Ulysses | James Joyce | Joyce
novel | Mrs Dalloway | Virginia Woolf | Woolf
novella | The Metamorphosis | Franz Kafka | Kafka
novel | The Trial | Franz Kafka | Kafka
novel | One Hundred Years of Solitude | Gabriel García Márquez | García Márquez; Garcia Marquez
novel | The Grapes of Wrath | John Steinbeck | Steinbeck
novella | Of Mice and Men | John Steinbeck | Steinbeck
novel | East of Eden | John Steinbeck | Steinbeck
novel | Fahrenheit 451 | Ray Bradbury | Bradbury
novel | Lord of the Flies | William Golding | Golding
book | On the Origin of Species | Charles Darwin | Darwin
book | The Wealth of Nations | Adam Smith
book | The Prince | Niccolò Machiavelli | Machiavelli; Niccolo Machiavelli
book | Leviathan | Thomas Hobbes | Hobbes
book | A Brief History of Time | Stephen Hawking | Hawking
novel | Gulliver's Travels | Jonathan Swift | Swift
novel | Robinson Crusoe | Daniel Defoe | Defoe
book | The Canterbury Tales | Geoffrey Chaucer | Chaucer
epic poem | Paradise Lost | John Milton | Milton
novella | The Little Prince | Antoine de Saint-Exupéry | Saint-Exupéry; Saint-Exupery
novel | Murder on the Orient Express | Agatha Christie | Christie
novel | The Time Machine | H. G. Wells | Wells; H.G. Wells
novel | The War of the Worlds | H. G. Wells | Wells; H.G. Wells
novel | Around the World in Eighty Days | Jules Verne | Verne
novel | Twenty Thousand Leagues Under the Seas | Jules Verne | Verne
novella | Heart of Darkness | Joseph Conrad | Conrad
novel | Beloved | Toni Morrison | Morrison
novel | The Handmaid's Tale | Margaret Atwood | Atwood
novel | Catch-22 | Joseph Heller | Heller
novel | Slaughterhouse-Five | Kurt Vonnegut | Vonnegut
novel | Lolita | Vladimir Nabokov | Nabokov
novel | Little Women | Louisa May Alcott | Alcott
novel | Uncle Tom's Cabin | Harriet Beecher Stowe | Stowe
novel | The Scarlet Letter | Nathaniel Hawthorne | Hawthorne
novel | Dune | Frank Herbert
novel | The Hitchhiker's Guide to the Galaxy | Douglas Adams
novel | Charlie and the Chocolate Factory | Roald Dahl | Dahl
book | The Jungle Book | Rudyard Kipling | Kipling
novel | The Wind in the Willows | Kenneth Grahame | Grahame
novel | Anne of Green Gables | L. M. Montgomery | Montgomery; Lucy Maud Montgomery
novel | The Call of the Wild | Jack London
novel | Things Fall Apart | Chinua Achebe | Achebe
novel | Midnight's Children | Salman Rushdie | Rushdie
novel | The Kite Runner | Khaled Hosseini | Hosseini
novel | Gone with the Wind | Margaret Mitchell
novel | Doctor Zhivago | Boris Pasternak | Pasternak
novel | The Master and Margarita | Mikhail Bulgakov | Bulgakov
novel | The Name of the Rose | Umberto Eco
novel | Siddhartha | Hermann Hesse | Hesse
novel | All Quiet on the Western Front | Erich Maria Remarque | Remarque
novel | Middlemarch | George Eliot | Mary Ann Evans
novel | Tess of the d'Urbervilles | Thomas Hardy | Hardy
novel | The Secret Garden | Frances Hodgson Burnett | Burnett
novel | Black Beauty | Anna Sewell | Sewell
play | A Doll's House | Henrik Ibsen | Ibsen
play | Waiting for Godot | Samuel Beckett | Beckett
play | Death of a Salesman | Arthur Miller
play | A Streetcar Named Desire | Tennessee Williams
novel | Candide | Voltaire
novel | Rebecca | Daphne du Maurier | du Maurier
novel | A Clockwork Orange | Anthony Burgess | Burgess
novel | The Hunger Games | Suzanne Collins
novel | The Shining | Stephen King
"""

YEARS = """
# question | year (all AD)
In what year did the Battle of Hastings take place? | 1066
In what year did King John seal Magna Carta? | 1215
In what year did Christopher Columbus first reach the Americas? | 1492
In what year did Constantinople fall to the Ottoman Turks? | 1453
In what year did Martin Luther publish his Ninety-five Theses? | 1517
In what year was the Spanish Armada defeated by England? | 1588
In what year was the United States Declaration of Independence adopted? | 1776
In what year did the storming of the Bastille take place? | 1789
In what year was the Battle of Waterloo fought? | 1815
In what year was the Battle of Trafalgar fought? | 1805
In what year did the American Civil War begin? | 1861
In what year did the American Civil War end? | 1865
In what year was Abraham Lincoln assassinated? | 1865
In what year did the First World War begin? | 1914
In what year did the First World War end? | 1918
In what year did the Russian October Revolution take place? | 1917
In what year did the Wall Street Crash take place? | 1929
In what year did the Second World War begin? | 1939
In what year did the Second World War end? | 1945
In what year did Japan attack Pearl Harbor? | 1941
In what year did the D-Day landings in Normandy take place? | 1944
In what year was the atomic bomb dropped on Hiroshima? | 1945
In what year was the United Nations founded? | 1945
In what year did India gain independence from Britain? | 1947
In what year was the People's Republic of China proclaimed? | 1949
In what year was NATO founded? | 1949
In what year did the Korean War begin? | 1950
In what year was Sputnik 1 launched? | 1957
In what year did Yuri Gagarin become the first person in space? | 1961
In what year was the Berlin Wall built? | 1961
In what year did the Berlin Wall fall? | 1989
In what year was John F. Kennedy assassinated? | 1963
In what year did Apollo 11 land on the Moon? | 1969
In what year did the Chernobyl nuclear disaster happen? | 1986
In what year was Germany reunified? | 1990
In what year was the Soviet Union dissolved? | 1991
In what year was Nelson Mandela released from prison? | 1990
In what year did Nelson Mandela become President of South Africa? | 1994
In what year did euro banknotes and coins enter circulation? | 2002
In what year did the September 11 attacks on the United States take place? | 2001
In what year did the Titanic sink? | 1912
In what year did the Wright brothers make their first powered flight? | 1903
In what year was the Treaty of Versailles signed? | 1919
In what year did the Great Fire of London happen? | 1666
In what year was the Gunpowder Plot against King James I uncovered? | 1605
In what year did the Mayflower sail to North America? | 1620
In what year was King Charles I of England executed? | 1649
In what year did the Acts of Union unite England and Scotland as Great Britain? | 1707
In what year did Queen Victoria come to the throne? | 1837
In what year did Queen Victoria die? | 1901
In what year did Elizabeth I become Queen of England? | 1558
In what year was Queen Elizabeth II crowned? | 1953
In what year did Queen Elizabeth II die? | 2022
In what year was the Battle of Gettysburg fought? | 1863
In what year did the United States make the Louisiana Purchase? | 1803
In what year was Napoleon crowned Emperor of the French? | 1804
In what year did the Suez Canal open? | 1869
In what year did the Panama Canal open? | 1914
In what year was the Eiffel Tower completed? | 1889
In what year did Charles Darwin publish On the Origin of Species? | 1859
In what year did Isaac Newton publish his Principia? | 1687
In what year did Alexander Fleming discover penicillin? | 1928
In what year did Albert Einstein publish his theory of special relativity? | 1905
In what year did Watson and Crick publish the double-helix structure of DNA? | 1953
In what year was the first iPhone released? | 2007
In what year did the Cuban Missile Crisis take place? | 1962
In what year did Saigon fall, ending the Vietnam War? | 1975
In what year did Martin Luther King Jr. give his "I Have a Dream" speech? | 1963
In what year was Martin Luther King Jr. assassinated? | 1968
In what year did Rosa Parks refuse to give up her bus seat in Montgomery? | 1955
In what year was the Treaty of Rome signed, creating the European Economic Community? | 1957
In what year was the Maastricht Treaty signed? | 1992
In what year did the United Kingdom hold its referendum on leaving the European Union? | 2016
In what year did the United Kingdom formally leave the European Union? | 2020
In what year was Hong Kong handed over from Britain to China? | 1997
In what year did the Easter Rising take place in Dublin? | 1916
In what year did the Battle of the Somme begin? | 1916
In what year was the Battle of Agincourt fought? | 1415
In what year was Joan of Arc executed? | 1431
In what year was the Battle of Bosworth Field fought? | 1485
In what year did Vasco da Gama first reach India by sea? | 1498
In what year did Henry VIII become King of England? | 1509
In what year were the Battles of Lexington and Concord fought? | 1775
In what year was the United States Constitution signed? | 1787
In what year was George Washington inaugurated as the first US President? | 1789
In what year was the German Empire proclaimed at Versailles? | 1871
In what year was Archduke Franz Ferdinand assassinated in Sarajevo? | 1914
In what year did New Zealand become the first country to give women the vote? | 1893
In what year did Adolf Hitler become Chancellor of Germany? | 1933
In what year did the Spanish Civil War begin? | 1936
In what year was Mahatma Gandhi assassinated? | 1948
In what year was the Universal Declaration of Human Rights adopted? | 1948
In what year did Edmund Hillary and Tenzing Norgay first climb Mount Everest? | 1953
In what year did Roger Bannister run the first four-minute mile? | 1954
In what year did President Richard Nixon resign? | 1974
In what year did the Iranian Revolution overthrow the Shah? | 1979
In what year did Iraq invade Kuwait? | 1990
In what year did the Rwandan genocide take place? | 1994
In what year did the Channel Tunnel open? | 1994
In what year was the Good Friday Agreement signed? | 1998
In what year did the Indian Ocean tsunami strike? | 2004
In what year was Barack Obama first elected US President? | 2008
In what year did the Fukushima nuclear disaster happen? | 2011
In what year was the Space Shuttle Challenger disaster? | 1986
In what year was the Hubble Space Telescope launched? | 1990
In what year were the first modern Olympic Games held in Athens? | 1896
In what year was the first FIFA World Cup held? | 1930
In what year did the Boston Tea Party take place? | 1773
In what year did the First Fleet arrive in Australia? | 1788
In what year did Canadian Confederation take place? | 1867
In what year did the United States buy Alaska from Russia? | 1867
In what year was Charlemagne crowned emperor in Rome? | 800
In what year did the Visigoths sack Rome? | 410
In what year did the Battle of Britain take place? | 1940
In what year did Germany invade the Soviet Union in Operation Barbarossa? | 1941
In what year was the Battle of Midway fought? | 1942
In what year was Wikipedia launched? | 2001
In what year did the World Health Organization declare COVID-19 a pandemic? | 2020
In what year was the Voyager 1 space probe launched? | 1977
In what year was the Battle of Lepanto fought? | 1571
In what year did William Shakespeare die? | 1616
In what year was Wolfgang Amadeus Mozart born? | 1756
"""

FACTS = """
# question | answer | aliases
What is the largest planet in the Solar System? | Jupiter
What is the smallest planet in the Solar System? | Mercury
Which planet is closest to the Sun? | Mercury
Which planet is known as the Red Planet? | Mars
What is the hottest planet in the Solar System? | Venus
Which planet has a giant storm called the Great Red Spot? | Jupiter
How many planets are in the Solar System? | 8 | eight
What is the name of the galaxy that contains the Solar System? | Milky Way | the Milky Way
What is the largest moon of Saturn? | Titan
What is the largest moon of Jupiter? | Ganymede
What star is at the centre of the Solar System? | Sun | the Sun
What gas do plants absorb from the air? | carbon dioxide | CO2
What gas do plants release during photosynthesis? | oxygen | O2
What is the most abundant gas in Earth's atmosphere? | nitrogen | N2
What is the most abundant element in the universe? | hydrogen
Which metal is liquid at room temperature? | mercury
Which light gas is used to make party balloons float? | helium
What is the chemical formula of water? | H2O
What is the chemical formula of table salt? | NaCl
What is the chemical formula of carbon dioxide? | CO2
What is the pH of pure water at 25 degrees Celsius? | 7
At what temperature in degrees Celsius does water boil at sea level? | 100
At what temperature in degrees Celsius does pure water freeze? | 0
At what temperature in degrees Fahrenheit does pure water freeze? | 32
At what temperature in degrees Fahrenheit does water boil at sea level? | 212
What is the atomic number of carbon? | 6
What is the atomic number of oxygen? | 8
What is the hardest naturally occurring substance? | diamond
What is the largest ocean on Earth? | Pacific Ocean | Pacific; the Pacific
What is the largest continent by area? | Asia
What is the largest country in the world by area? | Russia
What is the highest mountain above sea level on Earth? | Mount Everest | Everest
What is the largest hot desert in the world? | Sahara | Sahara Desert
What is the deepest ocean trench on Earth? | Mariana Trench | Marianas Trench
What is the largest mammal on Earth? | blue whale
What is the tallest animal on Earth? | giraffe
What is the fastest land animal? | cheetah
What is the largest living bird? | ostrich
What is the only mammal capable of true flight? | bat
What do bees make from nectar? | honey
What is a baby frog called? | tadpole | polliwog
What is a baby kangaroo called? | joey
What is a group of lions called? | pride
What is a group of wolves called? | pack
What do giant pandas mainly eat? | bamboo
How many legs does a spider have? | 8 | eight
How many legs does an insect have? | 6 | six
How many hearts does an octopus have? | 3 | three
What is the largest organ of the human body? | skin
What is the largest internal organ of the human body? | liver
What is the longest bone in the human body? | femur | thigh bone; thighbone
What is the smallest bone in the human body? | stapes | stirrup
How many bones are in the adult human body? | 206
How many chambers does the human heart have? | 4 | four
How many teeth are in a full set of adult human teeth? | 32
How many chromosomes are in a typical human body cell? | 46
Which organ produces insulin? | pancreas
Which organ pumps blood around the body? | heart
Which pair of organs filters the blood to produce urine? | kidneys | kidney
What is the largest artery in the human body? | aorta
Which protein in red blood cells carries oxygen? | haemoglobin | hemoglobin
Which vitamin does human skin make when exposed to sunlight? | vitamin D
Which part of the cell is known as its powerhouse? | mitochondria | mitochondrion
Which blood type is known as the universal donor? | O negative | O-; O neg
What is the scientific study of earthquakes called? | seismology
Who painted the Mona Lisa? | Leonardo da Vinci | Leonardo; da Vinci
Who painted The Starry Night? | Vincent van Gogh | van Gogh
Who painted the ceiling of the Sistine Chapel? | Michelangelo | Michelangelo Buonarroti
Who painted Guernica? | Pablo Picasso | Picasso
Who composed The Four Seasons? | Antonio Vivaldi | Vivaldi
Who composed the opera The Magic Flute? | Wolfgang Amadeus Mozart | Mozart
Who developed the theory of relativity? | Albert Einstein | Einstein
Who formulated the laws of motion and the law of universal gravitation? | Isaac Newton | Newton
Who discovered penicillin? | Alexander Fleming | Fleming
Who was the first person to walk on the Moon? | Neil Armstrong | Armstrong
Who was the first person to travel into space? | Yuri Gagarin | Gagarin
Who was the first President of the United States? | George Washington | Washington
Who was the first woman to win a Nobel Prize? | Marie Curie | Curie; Marie Skłodowska-Curie
Who is the king of the gods in Greek mythology? | Zeus
Who is the Greek god of the sea? | Poseidon
Who is the Greek goddess of wisdom? | Athena | Athene
Who is the Norse god of thunder? | Thor
Who is the Roman god of war? | Mars
What is the currency of Japan? | yen | Japanese yen
What is the currency of the United Kingdom? | pound sterling | pound; British pound; sterling
What is the currency of India? | rupee | Indian rupee
What is the currency of Mexico? | peso | Mexican peso
What is the currency of South Korea? | won | South Korean won
What is the currency of Switzerland? | Swiss franc | franc
What is the official language of Brazil? | Portuguese
Which country gave the Statue of Liberty to the United States? | France
In which city is the Colosseum? | Rome
In which city is the Eiffel Tower? | Paris
In which city is the Taj Mahal? | Agra
In which city is the Parthenon? | Athens
In which city is Red Square? | Moscow
In which city is the Sagrada Família? | Barcelona
In which city is the Golden Gate Bridge? | San Francisco
In which country is Machu Picchu? | Peru
In which country is the ancient city of Petra? | Jordan
In which country is the temple complex of Angkor Wat? | Cambodia
In which country are the Pyramids of Giza? | Egypt
How many players does a football (soccer) team have on the field at one time? | 11 | eleven
How many players does a basketball team have on the court at one time? | 5 | five
How many strings does a standard violin have? | 4 | four
How many strings does a standard guitar have? | 6 | six
How many keys does a standard modern piano have? | 88
How many degrees are in a right angle? | 90
How many degrees are in a full circle? | 360
What is the value of pi rounded to two decimal places? | 3.14
What is the SI unit of force? | newton
What is the SI unit of energy? | joule
What is the SI unit of power? | watt
What is the SI unit of electrical resistance? | ohm
What is the SI unit of frequency? | hertz | Hz
What force keeps the planets in orbit around the Sun? | gravity | gravitation
"""


if __name__ == "__main__":
    main()
