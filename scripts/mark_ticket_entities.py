"""Write src/tuneloop/examples/support_ticket_entities.jsonl: the shipped support tickets with their order
numbers (ORDER), products (PRODUCT) and dates (DATE) marked as character spans, by the rules below.

The rules are the annotation guideline, applied the same way to every ticket, so a model can learn them:
- ORDER: an order number as the store writes it (VC-12345), without the '#' before it.
- PRODUCT: a product the store sells, from the list below, with the words that name its kind ("4K monitor",
  "over-ear headphones", "iPhone 13", "VX300"); not brands alone, not "order" or "item".
- DATE: a day or a month: "2 May", "Dec 26", "March 2023", "the 8th", weekdays ("since Monday", "last
  Thursday"), "yesterday", "today", "last week", "last month"; not "Black Friday" (an event).

Run it again after editing the rules: python scripts/mark_ticket_entities.py
"""

from __future__ import annotations

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "src" / "tuneloop" / "examples"
PRODUCTS = [
    "smart tv", "tv", "mesh router", "router", "phone charger", "wireless charger", "charger", "smart thermostat",
    "thermostat", "mechanical keyboard", "keyboard", "robot vacuum", "over-ear headphones", "noise-cancelling headphones",
    "headphones", "smart lock", "laptop bundle", "gaming laptop", "laptop", "e-reader", "drone", "4k monitor",
    "gaming monitor", "monitor", "wireless earbuds", "earbuds", "ipad", r"iphone(?: \d+)?", "gaming pc", "hdmi cables?",
    "usb-c cables?", "charging cable", "smart plugs?", "webcam", "bluetooth speaker", "smart speaker", "speaker",
    "soundbar", "tablet", "smartwatch", "smart watch", "security camera", "camera", "printer", "gaming mouse", "mouse", "pc", "console",
    "video doorbell", "smart doorbell", "doorbell", "projector", "kettle", "blender", "fridge", "power bank", "ssd", "microphone",
    "controller", "smart bulbs?", "light bulbs?", r"vx\d{3}",
]
PRODUCT = re.compile(r"\b(?:" + "|".join(p if p.endswith(("?", ")")) or "\\" in p else p + "s?" for p in PRODUCTS)
                     + r")\b", re.I)
ORDER = re.compile(r"\bVC-\d{5}\b")
MONTHS = ("January|February|March|April|May|June|July|August|September|October|November|December|"
          "Jan|Feb|Mar|Apr|Jun|Jul|Aug|Sep|Sept|Oct|Nov|Dec")
DAY = r"\d{1,2}(?:st|nd|rd|th)?"
DATE = re.compile(
    rf"\b(?:{DAY} (?:{MONTHS})\b(?: \d{{4}})?"             # 2 May, 12 April 2024
    rf"|(?:{MONTHS}) {DAY}\b(?:,? \d{{4}})?"               # Dec 26, March 3rd
    rf"|(?:{MONTHS}) \d{{4}}\b"                             # March 2023
    rf"|(?:January|February|April|June|July|August|September|October|November|December)\b"  # in January
    r"|the \d{1,2}(?:st|nd|rd|th)\b(?! (?:time|floor|century))"  # the 8th
    r"|(?:last |this |next )?(?:Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|Sunday)\b"
    r"|yesterday|today|tomorrow|last (?:week|month|year))")


def mark(text: str) -> list[dict]:
    found: list[tuple[int, int, str]] = []
    for label, pattern in (("ORDER", ORDER), ("DATE", DATE), ("PRODUCT", PRODUCT)):
        for m in pattern.finditer(text):
            start, end = m.span()
            if label == "DATE" and re.search(r"black\s*$", text[:start], re.I):
                continue
            if label == "DATE" and m.group(0)[0].islower() and m.group(0).split()[0] in {"may", "march"}:
                continue
            if not any(start < e and s < end for s, e, _ in found):
                found.append((start, end, label))
    return [{"start": s, "end": e, "label": label} for s, e, label in sorted(found)]


# The real tickets hold few dates and order numbers (about 50 and 30), too few to learn their forms from. These
# templates, in the tickets' own style, add 240 more tickets (seeded, so the file is the same on every run);
# they are marked by the same rules as the real ones.
TEMPLATES = [
    "Hi, my order {order} was supposed to arrive {date} but tracking hasn't moved. Can you check?",
    "I ordered the {product} on {date} and it still says processing. Order {order}.",
    "Order #{order}: the {product} arrived broken {date}. I'd like a replacement please.",
    "Can I return the {product} I bought {date}? It's unopened.",
    "The {product} from order {order} stopped working {date}, is it still under warranty?",
    "I was charged twice for {order} {date}. Please refund one of the payments.",
    "Please cancel {order}, I placed it by mistake {date}.",
    "My {product} was delivered {date} to the wrong address. The order number is {order}.",
    "Hello, I'm away from {date} until {date2}. Can you hold my parcel ({order}) at the depot?",
    "Warranty claim for the {product}, bought {date}. The screen flickers constantly.",
    "Is the {product} back in stock yet? I was told it would be {date}.",
    "Estimated delivery for {order} changed from {date} to {date2}. Why?",
    "hi, where is my {product}?? ordered {date}, order {order}",
    "The {product} I got {date} has a dent on the side. Do you want photos?",
    "Could you send an invoice for order {order}? I need it for my expenses by {date}.",
    "I returned the {product} {date} but haven't seen the refund yet.",
    "Exchange request: the {product} from {order} is the wrong colour.",
    "My {product} won't pair with my {product2} since the update {date}.",
    "Just checking the {product} and the {product2} ship together in {order}.",
    "Thanks for sorting out my {product} so quickly {date}, great service.",
]
DATES = ["yesterday", "today", "last week", "last month", "on Monday", "last Friday", "since Tuesday", "on Thursday",
         "on 2 May", "on 14 February", "on 3 June", "on the 8th", "on the 21st", "by the 12th", "on March 3rd",
         "on Dec 26", "in January", "in November", "on 12 April", "on Oct 17", "on 30 September", "on the 1st",
         "last Sunday", "on Jan 4", "on 7 August", "on July 19", "on the 3rd", "on Saturday", "in October",
         "on 28 October 2025", "on June 2, 2026"]
TEMPLATE_PRODUCTS = ["router", "mesh router", "smart thermostat", "robot vacuum", "4K monitor", "gaming monitor",
                     "wireless earbuds", "earbuds", "e-reader", "smart plug", "smart lock", "video doorbell",
                     "laptop", "gaming laptop", "tablet", "webcam", "soundbar", "bluetooth speaker", "power bank",
                     "over-ear headphones", "headphones", "keyboard", "mechanical keyboard", "charger", "drone",
                     "security camera", "projector", "smartwatch", "VX300", "kettle", "phone charger", "HDMI cable"]


def templated(n: int = 240, seed: int = 0) -> list[str]:
    import random

    rng = random.Random(seed)
    texts = []
    for _ in range(n):
        date, date2 = rng.sample(DATES, 2)
        strip = {"from {date} until": lambda d: d.removeprefix("on ").removeprefix("in ").removeprefix("since ")}
        product, product2 = rng.sample(TEMPLATE_PRODUCTS, 2)
        template = rng.choice(TEMPLATES)
        if "{date} until" in template or "from {date} to" in template:
            date, date2 = strip["from {date} until"](date), strip["from {date} until"](date2)
        texts.append(template.format(order=f"VC-{rng.randrange(10000, 99999)}", date=date, date2=date2,
                                     product=product, product2=product2))
    return texts


def main() -> None:
    rows = [json.loads(line) for line in (ROOT / "support_tickets.jsonl").read_text().splitlines() if line.strip()]
    rows += [{"text": text} for text in templated()]
    out = ROOT / "support_ticket_entities.jsonl"
    with out.open("w") as f:
        for row in rows:
            f.write(json.dumps({"text": row["text"], "spans": mark(row["text"])}, ensure_ascii=False) + "\n")
    spans = [s for row in rows for s in mark(row["text"])]
    counts = {label: sum(s["label"] == label for s in spans) for label in ("ORDER", "PRODUCT", "DATE")}
    print(f"{out}: {len(rows)} tickets, {sum(1 for r in rows if mark(r['text']))} with spans, {counts}")


if __name__ == "__main__":
    main()
