"""Generate ``examples/contacts.csv``: a realistic CRM export for the dialler CLI.

Usage::

    python examples/make_contacts.py                      # 3,000 rows, seed 2026
    python examples/make_contacts.py -n 500000 -o big.csv  # a campaign-sized load

Plain comma CSV in UTF-8, header in the API's field names, German/Austrian/Swiss names
with umlauts, E.164 phone numbers and UserData keys like ``CRM-000123``. A handful of rows
(``--broken``, default 11) are deliberately broken the way CRM exports break: missing name,
no phone number, a postal code or phone number that is too long, an unparsable amount...
The output is deterministic for a given seed. There is no campaign column: the import
command supplies one (``--campaign-name "Spring Campaign"``).
"""

from __future__ import annotations

import argparse
import csv
import random
import sys
from collections.abc import Callable
from pathlib import Path

HEADER = [
    "UserData",
    "Salutation",
    "Title",
    "FirstName",
    "Name",
    "Company",
    "Address",
    "PostalCode",
    "City",
    "Country",
    "PhoneNumber1",
    "PhoneNumber2",
    "Email",
    "Amount",
    "Comment",
]

FEMALE = (
    "Anna Annette Birgit Brigitte Doris Elke Franziska Gisela Hannelore Ingrid Jana "
    "Jutta Karin Käthe Lena Lea Lotte Maria Marlene Mia Monika Nicole Petra Renate Sabine "
    "Sophie Susanne Ursula Zoë Änne Heike"
).split()
MALE = (
    "Andreas Bernd Björn Christian Dieter Dirk Florian Frank Günther Hans Heinz Jörg Jürgen "
    "Klaus Lukas Manfred Matthias Michael Niklas Ralf Rüdiger Sören Stefan Thomas Uwe Werner "
    "Wolfgang Maximilian Jonas Lars"
).split()
SURNAMES = [
    *(
        "Müller Schmidt Schneider Fischer Weber Meyer Wagner Becker Schulz Hoffmann Schäfer Koch "
        "Bauer Richter Klein Wolf Schröder Neumann Schwarz Zimmermann Braun Krüger Hofmann "
        "Hartmann Lange Schmitt Werner Krause Meier Lehmann Köhler Jäger Groß Weiß Böhm Günther "
        "Größer Hübner Kühn Möller Pöschl Gruber Huber Brunner Steiner Moser Wyss Keller "
        "Baumann Frei Studer Lüthi Egger Hämmerli Özdemir Nowak Dąbrowski"
    ).split(),
    "von Bülow",
    "de Vries",
    "Müller-Lüdenscheidt",
]
STREETS = [
    *(
        "Hauptstraße Bahnhofstraße Schloßallee Königsallee Mühlenweg Gartenstraße Lindenstraße "
        "Kirchgasse Marktplatz Goethestraße Schillerstraße Rosenweg Talstraße Waldstraße "
        "Dorfstraße Seestraße Römerstraße Brückenstraße Zürcherstrasse Ringstraße"
    ).split(),
    "Am Bürgerpark",
    "Unter den Linden",
    "Kurfürstendamm",
]
COMPANIES = (
    "Bäckerei {n} GmbH",
    "{n} & Söhne KG",
    "Autohaus {n}",
    "Zahnarztpraxis Dr. {n}",
    "{n} Immobilien GmbH",
    "Elektro {n} e.K.",
    "Steuerbüro {n}",
    "Gärtnerei {n}",
    "{n} Logistik AG",
    "Metzgerei {n}",
)
COMMENTS = (
    "",
    "",
    "",
    "Rückruf erwünscht",
    "Bestandskunde seit 2019",
    "bitte nur vormittags anrufen",
    "Interesse an Tarifwechsel",
    'Kunde sagt: "kein Interesse im Moment"',
    "Termin verschoben, neu vereinbaren",
    "Ansprechpartnerin: Frau Groß, Einkauf",
    "Vertrag läuft bis 31.12.",
    "hat Prospekt erhalten; Nachfassen",
)
# (country, share, cities with postal-code ranges, landline area codes, mobile prefixes)
COUNTRIES = (
    (
        "Deutschland",
        0.70,
        "+49",
        (
            ("Berlin", 10115, 14199, "30"),
            ("Hamburg", 20095, 22769, "40"),
            ("München", 80331, 81929, "89"),
            ("Köln", 50667, 51149, "221"),
            ("Frankfurt am Main", 60306, 65936, "69"),
            ("Düsseldorf", 40210, 40629, "211"),
            ("Nürnberg", 90402, 90491, "911"),
            ("Lübeck", 23552, 23570, "451"),
            ("Würzburg", 97070, 97084, "931"),
            ("Göttingen", 37073, 37085, "551"),
        ),
        ("151", "152", "160", "170", "171", "176"),
    ),
    (
        "Österreich",
        0.18,
        "+43",
        (
            ("Wien", 1010, 1230, "1"),
            ("Graz", 8010, 8055, "316"),
            ("Linz", 4020, 4040, "732"),
            ("Salzburg", 5020, 5026, "662"),
            ("Innsbruck", 6020, 6080, "512"),
            ("Klagenfurt am Wörthersee", 9020, 9073, "463"),
        ),
        ("650", "660", "664", "676", "699"),
    ),
    (
        "Schweiz",
        0.12,
        "+41",
        (
            ("Zürich", 8001, 8099, "44"),
            ("Bern", 3001, 3030, "31"),
            ("Basel", 4001, 4059, "61"),
            ("Genève", 1201, 1209, "22"),
            ("Luzern", 6002, 6015, "41"),
            ("St. Gallen", 9000, 9016, "71"),
        ),
        ("76", "77", "78", "79"),
    ),
)


def _ascii(text: str) -> str:
    for a, b in (("ä", "ae"), ("ö", "oe"), ("ü", "ue"), ("ß", "ss"), ("ë", "e"), ("ą", "a")):
        text = text.replace(a, b).replace(a.upper(), b.capitalize())
    return "".join(c for c in text.lower() if c.isalnum() or c in ".-")


def _phone(rng: random.Random, cc: str, area: str, mobiles: tuple[str, ...]) -> str:
    if rng.random() < 0.45:
        return f"{cc}{rng.choice(mobiles)}{rng.randrange(10**6, 10**8)}"
    digits = 10 - len(area) if cc == "+49" else 9 - len(area)
    return f"{cc}{area}{rng.randrange(10 ** (digits - 1), 10**digits)}"


def contact(rng: random.Random, n: int) -> dict[str, str]:
    """One plausible CRM row."""
    female = rng.random() < 0.5
    first = rng.choice(FEMALE if female else MALE)
    last = rng.choice(SURNAMES)
    weights = [c[1] for c in COUNTRIES]
    country, _, cc, cities, mobiles = rng.choices(COUNTRIES, weights)[0]
    city, low, high, area = rng.choice(cities)
    postal = rng.randint(low, high)
    postal_text = f"{postal:05d}" if cc == "+49" else str(postal)
    company = rng.choice(COMPANIES).format(n=last) if rng.random() < 0.3 else ""
    domain = rng.choice(("example.com", "example.org", "example.net"))
    return {
        "UserData": f"CRM-{n:06d}",
        "Salutation": "Frau" if female else "Herr",
        "Title": rng.choice(("", "", "", "", "Dr.", "Prof.", "Mag.")),
        "FirstName": first,
        "Name": last,
        "Company": company,
        "Address": f"{rng.choice(STREETS)} {rng.randint(1, 180)}{rng.choice(['', '', 'a', 'b'])}",
        "PostalCode": postal_text,
        "City": city,
        "Country": country,
        "PhoneNumber1": _phone(rng, cc, area, mobiles),
        "PhoneNumber2": _phone(rng, cc, area, mobiles) if rng.random() < 0.35 else "",
        "Email": f"{_ascii(first)}.{_ascii(last)}{rng.randint(1, 99)}@{domain}"
        if rng.random() < 0.8
        else "",
        "Amount": f"{rng.randint(0, 250_000) / 100:.2f}" if rng.random() < 0.6 else "",
        "Comment": rng.choice(COMMENTS),
    }


def _no_name(row: dict[str, str]) -> None:
    row["Name"] = ""


def _blank_name(row: dict[str, str]) -> None:
    row["Name"] = "   "


def _no_phone(row: dict[str, str]) -> None:
    row["PhoneNumber1"] = row["PhoneNumber2"] = ""


def _long_postal_code(row: dict[str, str]) -> None:
    row["PostalCode"] = f"D-{row['PostalCode']} {row['City']}"


def _bad_amount(row: dict[str, str]) -> None:
    row["Amount"] = "1.234,56"  # German thousands separator: not a number


def _text_amount(row: dict[str, str]) -> None:
    row["Amount"] = "zwölf Euro"


def _long_salutation(row: dict[str, str]) -> None:
    row["Salutation"] = "Sehr geehrte Frau Professorin"


def _long_phone(row: dict[str, str]) -> None:
    row["PhoneNumber1"] = row["PhoneNumber1"] + " oder abends unter " + row["PhoneNumber1"]


def _long_user_data(row: dict[str, str]) -> None:
    row["UserData"] = row["UserData"] + "-" + "X" * 60


def _formula_and_no_phone(row: dict[str, str]) -> None:
    row["Comment"] = '=HYPERLINK("http://example.com","klick")'
    row["PhoneNumber1"] = ""


def _long_name(row: dict[str, str]) -> None:
    row["Name"] = "Freiherr von und zu Guttenberg-Hohenzollern-Sigmaringen-Württemberg"


BREAKERS: tuple[Callable[[dict[str, str]], None], ...] = (
    _no_name,
    _no_phone,
    _long_postal_code,
    _bad_amount,
    _long_salutation,
    _blank_name,
    _text_amount,
    _long_phone,
    _long_user_data,
    _formula_and_no_phone,
    _long_name,
)


def generate(count: int, seed: int, broken: int) -> list[dict[str, str]]:
    rng = random.Random(seed)
    rows = [contact(rng, n) for n in range(1, count + 1)]
    if broken and count:
        spots = sorted(rng.sample(range(count), min(broken, count)))
        for i, spot in enumerate(spots):
            BREAKERS[i % len(BREAKERS)](rows[spot])
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", "--count", type=int, default=3000, help="rows (3000)")
    parser.add_argument("--seed", type=int, default=2026, help="random seed (2026)")
    parser.add_argument("--broken", type=int, default=len(BREAKERS), help="broken rows (11)")
    default = Path(__file__).with_name("contacts.csv")
    parser.add_argument("-o", "--output", default=str(default), help="file, or - for stdout")
    args = parser.parse_args(argv)
    rows = generate(args.count, args.seed, args.broken)
    if args.output == "-":
        writer = csv.DictWriter(sys.stdout, HEADER, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        return 0
    with open(args.output, "w", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, HEADER, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    print(f"wrote {len(rows):,} rows ({args.broken} broken) to {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
