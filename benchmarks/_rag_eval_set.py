"""The RAG evaluation set: short documents with known facts, and questions whose answer passage
is known (the chunk containing ``answer``).

Written by hand for this benchmark (fictional organisations, products and codes, so no model has
seen them). Question kinds:

* ``paraphrase``: says it in other words, sharing few or no content words with the passage
  (favours a semantic text model);
* ``keyword``: names a rare term, code or identifier that appears in the passage (favours BM25);
* ``mixed``: some shared words, some paraphrase.

Documents of the same kind (runbooks, policies, product sheets, ...) deliberately look alike, so
each question has several plausible distractors.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Doc:
    name: str
    title: str
    sections: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Question:
    text: str
    answer: str  # a substring of the answer passage
    kind: str


DOCS: tuple[Doc, ...] = (
    Doc("runbook-db-failover.md", "Database failover runbook", (
        ("When to fail over", "Fail over the primary Postgres node only when replication lag on replica PGR-12 stays above 90 seconds for five minutes."),
        ("Steps", "Promote the standby with the pg-promote script, then repoint the connection pooler at the new primary and page the on-call DBA."),
    )),
    Doc("runbook-cache.md", "Cache cluster runbook", (
        ("Eviction storms", "If the Redis cluster RC-7 evicts more than ten thousand keys a minute, raise maxmemory by two gigabytes and restart nothing."),
        ("Warm-up", "After a deploy the cache is cold for about twenty minutes; requests are slower but correct during that time."),
    )),
    Doc("runbook-certs.md", "TLS certificate runbook", (
        ("Renewal", "Certificates are renewed automatically thirty days before expiry by the certbot timer on host edge-3."),
        ("Manual renewal", "If automatic renewal fails, run renew-certs --force on edge-3 and reload nginx; never copy private keys by email."),
    )),
    Doc("runbook-disk.md", "Disk space runbook", (
        ("Alerts", "The disk alert fires at 85 percent usage on any volume of the log servers."),
        ("Cleanup", "Delete compressed logs older than fourteen days with the logrotate-purge job; do not remove the audit directory."),
    )),
    Doc("policy-travel.md", "Travel policy", (
        ("Flights", "Employees fly economy on trips shorter than six hours; business class is allowed for longer flights."),
        ("Meals", "The daily meal allowance abroad is 65 euros, receipts are not needed below that amount."),
    )),
    Doc("policy-leave.md", "Leave policy", (
        ("Annual leave", "Full-time staff receive twenty-eight days of paid holiday per year, and up to five unused days carry over to the next year."),
        ("Parental leave", "New parents may take sixteen weeks of fully paid leave within the first year after birth or adoption."),
    )),
    Doc("policy-remote.md", "Remote work policy", (
        ("Eligibility", "Anyone who has passed probation may work from home up to three days a week."),
        ("Equipment", "The company pays a one-time home office stipend of 400 euros for a desk or chair."),
    )),
    Doc("policy-security.md", "Security policy", (
        ("Passwords", "Passwords must be at least fourteen characters and are checked against known breach lists."),
        ("Lost devices", "Report a lost or stolen laptop to the service desk within one hour so it can be wiped remotely."),
    )),
    Doc("product-kettle.md", "Aurelia KT-220 kettle", (
        ("Specifications", "The Aurelia KT-220 holds 1.7 litres and boils a full jug in about four minutes."),
        ("Care", "Descale the kettle monthly with citric acid if you live in a hard-water area."),
    )),
    Doc("product-blender.md", "Vortexa BL-9 blender", (
        ("Specifications", "The Vortexa BL-9 motor delivers 1200 watts and has six speed settings."),
        ("Safety", "The blades stop at once when the lid is lifted, thanks to the magnetic interlock."),
    )),
    Doc("product-heater.md", "Solace HX-40 heater", (
        ("Specifications", "The Solace HX-40 oil radiator heats rooms up to twenty square metres."),
        ("Safety", "A tip-over switch cuts power if the heater falls, and the casing stays below 70 degrees."),
    )),
    Doc("product-lamp.md", "Lumen DL-5 desk lamp", (
        ("Specifications", "The Lumen DL-5 offers colour temperatures from 2700 to 6500 kelvin."),
        ("Power", "It charges over USB-C and runs for nine hours on a full battery."),
    )),
    Doc("city-harbor.md", "Port Veradin", (
        ("History", "Port Veradin was founded in 1412 by salt traders from the northern coast."),
        ("Today", "The harbour now serves ferries to the Calder Isles twice a day in summer."),
    )),
    Doc("city-mountain.md", "Orvath", (
        ("History", "The mountain town of Orvath grew around a silver mine that closed in 1871."),
        ("Today", "Skiers reach the upper slopes by a cable car opened in 1964."),
    )),
    Doc("city-river.md", "Lissmoor", (
        ("History", "Lissmoor was flooded so often that the old town was rebuilt on stilts in 1702."),
        ("Today", "The annual lantern festival on the river draws forty thousand visitors each October."),
    )),
    Doc("recipe-bread.md", "Rye sourdough", (
        ("Dough", "Mix 500 grams of rye flour with 400 grams of water and 100 grams of active starter."),
        ("Baking", "Bake at 240 degrees for the first fifteen minutes, then at 210 degrees for forty more."),
    )),
    Doc("recipe-soup.md", "Pumpkin soup", (
        ("Ingredients", "Roast one kilogram of pumpkin with two onions and a spoon of cumin."),
        ("Finishing", "Blend with coconut milk and season with lime juice just before serving."),
    )),
    Doc("recipe-curry.md", "Green curry", (
        ("Paste", "Pound green chillies, lemongrass, galangal and coriander roots into a paste."),
        ("Cooking", "Simmer the chicken in the paste and coconut milk for twelve minutes; add Thai basil at the end."),
    )),
    Doc("garden-tomato.md", "Growing tomatoes", (
        ("Planting", "Plant tomato seedlings outdoors only after the last frost, about sixty centimetres apart."),
        ("Watering", "Water the roots deeply twice a week rather than a little every day, to prevent split fruit."),
    )),
    Doc("garden-roses.md", "Caring for roses", (
        ("Pruning", "Prune roses in late winter, cutting just above an outward-facing bud."),
        ("Diseases", "Black spot is a fungus; remove fallen leaves and avoid wetting the foliage."),
    )),
    Doc("garden-compost.md", "Compost", (
        ("Mix", "Keep roughly three parts brown material such as dry leaves to one part green kitchen scraps."),
        ("Time", "A turned heap becomes usable compost in about three months in summer."),
    )),
    Doc("api-auth.md", "API authentication", (
        ("Tokens", "Requests carry a bearer token in the Authorization header; tokens expire after 3600 seconds."),
        ("Rotation", "Rotate a leaked API key from the console under Settings, Security, Rotate key; the old key stays valid for one hour."),
    )),
    Doc("api-limits.md", "API rate limits", (
        ("Limits", "Each project may send 600 requests per minute; bursts above that receive HTTP 429."),
        ("Retries", "Clients should retry after the number of seconds given in the Retry-After header."),
    )),
    Doc("api-errors.md", "API error codes", (
        ("Codes", "Error ERR-5512 means the upload exceeded the 25 megabyte limit."),
        ("More codes", "Error ERR-2031 means the webhook endpoint did not answer within ten seconds."),
    )),
    Doc("api-webhooks.md", "Webhooks", (
        ("Signing", "Every webhook is signed with HMAC-SHA256 using the endpoint's signing secret."),
        ("Delivery", "Failed deliveries are retried with exponential backoff for up to three days."),
    )),
    Doc("hr-onboarding.md", "Onboarding", (
        ("First day", "New hires collect their badge and laptop at reception at nine o'clock on their first day."),
        ("Mentors", "Every new colleague is paired with a buddy from another team for the first six weeks."),
    )),
    Doc("hr-expenses.md", "Expenses", (
        ("Claims", "Submit expense claims in the Ledgerly app within thirty days of the purchase."),
        ("Approval", "Claims above 500 euros need approval from a director before reimbursement."),
    )),
    Doc("hr-review.md", "Performance reviews", (
        ("Cycle", "Performance reviews happen twice a year, in March and September."),
        ("Calibration", "Managers calibrate ratings together in a session chaired by the HR partner."),
    )),
    Doc("science-tides.md", "Tides", (
        ("Cause", "Tides are caused mainly by the Moon's gravity pulling on the oceans."),
        ("Spring tides", "The largest tidal range occurs when the Sun and Moon line up, at new and full moon."),
    )),
    Doc("science-volcano.md", "Volcanoes", (
        ("Magma", "Runny basaltic magma produces gentle eruptions, while sticky silica-rich magma causes explosive ones."),
        ("Monitoring", "Scientists watch ground swelling with satellite radar to forecast eruptions."),
    )),
    Doc("science-bees.md", "Honeybees", (
        ("Communication", "Honeybees tell nestmates where flowers are with a waggle dance whose angle points the way relative to the Sun."),
        ("Colony", "A healthy colony in summer has one queen and up to sixty thousand workers."),
    )),
    Doc("support-printer.md", "Office printer", (
        ("Jams", "For paper jams in the PX-880 printer, open tray 2 and pull the sheet towards you, never backwards."),
        ("Toner", "Order toner cartridges through the facilities portal; spare ones are kept in room B214."),
    )),
    Doc("support-vpn.md", "VPN", (
        ("Connecting", "Install the Tunnelbridge client and sign in with your single sign-on account."),
        ("Problems", "If the VPN drops every few minutes, switch the protocol from UDP to TCP in the client settings."),
    )),
    Doc("support-wifi.md", "Office wifi", (
        ("Networks", "Staff use the network CORP-SECURE; visitors use GUEST-OPEN with a daily code from reception."),
        ("Speed", "Meeting rooms have dedicated access points, so video calls work best there."),
    )),
    Doc("legal-privacy.md", "Privacy notice", (
        ("Retention", "Customer support tickets are deleted automatically after twenty-four months."),
        ("Requests", "People can ask for a copy of their personal data by writing to the data protection officer."),
    )),
    Doc("legal-contracts.md", "Contract rules", (
        ("Signing", "Only directors may sign contracts worth more than 50,000 euros."),
        ("Storage", "Signed contracts are stored in the Archivum system under the client's number."),
    )),
)

QUESTIONS: tuple[Question, ...] = (
    # paraphrase: few shared content words
    Question("How much can I spend on food per day when working in another country?", "meal allowance abroad", "paraphrase"),
    Question("How many vacation days do I get each year?", "twenty-eight days", "paraphrase"),
    Question("Can I do my job from my house?", "work from home up to three days", "paraphrase"),
    Question("What should I do if my work computer gets stolen?", "lost or stolen laptop", "paraphrase"),
    Question("How big a room can the oil radiator warm?", "twenty square metres", "paraphrase"),
    Question("What happens if the space heater gets knocked over?", "tip-over switch", "paraphrase"),
    Question("Why does the sea rise and fall each day?", "Moon's gravity", "paraphrase"),
    Question("How do insects show each other where food is?", "waggle dance", "paraphrase"),
    Question("Which kind of molten rock leads to violent blasts?", "sticky silica-rich magma", "paraphrase"),
    Question("When is the right time of year to cut back the flowering shrubs with thorns?", "Prune roses in late winter", "paraphrase"),
    Question("How often should I give the tomato plants a drink?", "twice a week", "paraphrase"),
    Question("How long before a pile of kitchen waste turns into soil?", "about three months", "paraphrase"),
    Question("What do I receive when I start on my first morning?", "badge and laptop", "paraphrase"),
    Question("Who has to okay a big reimbursement?", "approval from a director", "paraphrase"),
    Question("How often are employees evaluated?", "twice a year", "paraphrase"),
    Question("The remote connection keeps disconnecting, how do I fix it?", "switch the protocol from UDP to TCP", "paraphrase"),
    Question("Where can guests get internet access in the building?", "GUEST-OPEN", "paraphrase"),
    Question("How long do you keep my help requests?", "twenty-four months", "paraphrase"),
    Question("Is it safe to put my hand near the blades when I open the top?", "magnetic interlock", "paraphrase"),
    Question("How do I stop the fruit from cracking?", "prevent split fruit", "paraphrase"),
    # keyword: rare terms, codes, identifiers
    Question("ERR-5512", "ERR-5512", "keyword"),
    Question("what does ERR-2031 mean", "ERR-2031", "keyword"),
    Question("PGR-12 lag threshold", "PGR-12", "keyword"),
    Question("RC-7 evictions", "RC-7", "keyword"),
    Question("edge-3 certbot", "certbot timer", "keyword"),
    Question("PX-880 jam", "PX-880", "keyword"),
    Question("room B214", "B214", "keyword"),
    Question("Tunnelbridge client", "Tunnelbridge", "keyword"),
    Question("CORP-SECURE", "CORP-SECURE", "keyword"),
    Question("Ledgerly app", "Ledgerly", "keyword"),
    Question("Archivum", "Archivum", "keyword"),
    Question("KT-220 capacity", "1.7 litres", "keyword"),
    Question("Vortexa BL-9 watts", "1200 watts", "keyword"),
    Question("Calder Isles ferry", "Calder Isles", "keyword"),
    Question("Orvath cable car", "cable car opened in 1964", "keyword"),
    Question("Lissmoor stilts", "stilts in 1702", "keyword"),
    Question("logrotate-purge", "logrotate-purge", "keyword"),
    Question("HMAC-SHA256 signing secret", "HMAC-SHA256", "keyword"),
    # mixed: some shared words, some paraphrase
    Question("How do I rotate an API key that leaked?", "Rotate a leaked API key", "mixed"),
    Question("How many requests can a project make before being throttled?", "600 requests per minute", "mixed"),
    Question("When was Port Veradin established and by whom?", "founded in 1412", "mixed"),
    Question("What temperature should I bake the rye bread at first?", "240 degrees", "mixed"),
    Question("What goes into the green curry paste?", "lemongrass, galangal", "mixed"),
    Question("What do I blend the pumpkin soup with?", "coconut milk and season with lime", "mixed"),
    Question("How long do webhook retries continue?", "exponential backoff for up to three days", "mixed"),
    Question("How long is paid parental leave?", "sixteen weeks", "mixed"),
    Question("What is the minimum password length?", "fourteen characters", "mixed"),
    Question("How long does the desk lamp battery last?", "nine hours", "mixed"),
    Question("When does the disk alert fire on log servers?", "85 percent", "mixed"),
    Question("Who may sign large contracts?", "Only directors may sign", "mixed"),
)
