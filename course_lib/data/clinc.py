"""CLINC150: 150 intents of a task-oriented assistant, in 10 domains, as few-shot classes.

Introduced in 07_pretrained_encoders. CLINC150 (Larson et al., "An Evaluation Dataset for Intent
Classification and Out-of-Scope Prediction", EMNLP 2019, arXiv:1909.02027) has 150 in-scope intents
(``transfer``, ``pin_change``, ...) with 150 crowd-sourced utterances each, 15 intents per domain.
Each intent is a class; its utterances are its examples. The out-of-scope utterances (``oos``) are
dropped, and all in-scope utterances of an intent are used (the official train, val and test lists
together): meta-learning splits by *intent*, not by utterance.

``load_clinc(split)`` returns an :class:`IntentDataset`: a ``ClassDataset`` whose ``data`` is a
LongTensor ``[intents, utterances_per_intent]`` of utterance ids into its ``texts``, so the
image sampler draws text episodes unchanged::

    test = load_clinc("test")
    episode = EpisodeSampler(test, n_way=5, k_shot=1, n_query=15).sample(generator)
    test.texts_of(episode.support_x)       # the 5 support utterances, in label order
    EpisodeSampler(test.by_domain()["banking"], n_way=15, k_shot=1, n_query=5)  # within one domain

Where the data comes from (``source="auto"`` tries these in order):

1. ``$COURSE_DATA/clinc150/data_full.json`` (md5-checked), then the same file in ``cache_dir()``;
   ``domains.json`` beside it gives each intent's domain, else the table ``DOMAINS`` below (the same
   content). A ``COURSE_DATA/clinc150/`` without ``data_full.json``, or a COURSE_DATA that does not
   exist, is a ``CourseDataError`` naming what is missing (``sources.find_local``).
2. The Hugging Face hub dataset ``clinc/clinc_oos`` (config ``plus``, the same utterances) through
   ``datasets``, if the hub answers within a few seconds; domains from ``DOMAINS``.
3. Otherwise, with COURSE_DATA unset, an offline generated stand-in, announced in one printed
   sentence (see :func:`load_clinc_standin`). ``source="real"``, or a set COURSE_DATA, raises
   ``DataNotFoundError`` instead; ``source="standin"`` uses the stand-in directly.

Splits are by domain, so meta-test intents, and their whole domains, are never seen in meta-training:

=====  ==============================================================  =======  =======
split  domains                                                         domains  intents
=====  ==============================================================  =======  =======
train  credit_cards, kitchen_and_dining, meta, small_talk, travel,     6        90
       utility
val    auto_and_commute                                                1        15
test   banking, home, work                                             3        45
=====  ==============================================================  =======  =======

Why these test domains: within each, the intents come in near-duplicates that share their topic
words and differ in what the user wants done, so a 15-way task within one domain cannot be solved
by spotting a keyword: ``bill_due``, ``bill_balance``, ``pay_bill``, ``min_payment`` (banking);
``reminder`` and ``reminder_update``, ``todo_list`` and ``todo_list_update``, ``calendar`` and
``calendar_update`` (home); ``pto_request``, ``pto_request_status``, ``pto_balance``, ``pto_used``
(work). They come from three areas (money, a personal organiser, employment), so 5-way tasks drawn
across them are varied too. ``credit_cards`` stays in meta-train: meta-training sees finance
vocabulary, never a test intent. ``utility`` (``timer``, ``weather``, ``flip_coin``, ...) is separable
by keywords, and ``small_talk`` and ``meta`` (``yes``, ``no``, ``maybe``, ...) are short, idiosyncratic
utterances: poor test domains, useful variety in training. Validation uses ``auto_and_commute``, which
has near-duplicates like the test domains (``oil_change_when`` and ``oil_change_how``, ``gas`` and
``gas_type``, ``tire_pressure`` and ``tire_change``), so choosing a model on it favours what the test
measures.

Measured, not assumed: ProtoNet on frozen all-MiniLM-L6-v2 embeddings, 15-way 1-shot within each
domain (15 queries per intent, 200 fixed episodes, 95% CIs about 0.6 points) gets home 58.0%,
kitchen_and_dining 62.5%, meta 69.2%, small_talk 74.6%, banking 74.8%, work 74.8%, credit_cards 75.9%,
auto_and_commute 77.1%, utility 82.4%, travel 86.4%. The test domains are among the hardest; the three
easiest (auto_and_commute, travel, utility) would report 94.0% 5-way 1-shot and 82.0% 15-way within a
domain, against 91.5% and 69.2% on the test domains chosen here, and leave less room to show what
adaptation adds.

Said plainly: these test domains were chosen AFTER frozen ProtoNet had been measured on every domain, so a
result on them is not an unbiased estimate for a new domain. 07_pretrained_encoders therefore also runs
leave-one-domain-out over all ten domains (each domain the test domain once, the next one alphabetically for
validation), and that average is the number to believe.
"""
from __future__ import annotations

import functools
import itertools
import json
import socket
import string
from collections import defaultdict
from pathlib import Path
from typing import Mapping, Sequence

import torch
from torch import Tensor

from .base import ClassDataset
from .sources import (DataNotFoundError, describe_path, failure_reason, fall_back_to_standin, find_local, looked_in)

SPLITS = ("train", "val", "test")
SOURCES = ("auto", "real", "standin")
FOLDER, DATA_FILE = "clinc150", "data_full.json"
OUT_OF_SCOPE = "oos"
HUB_DATASET, HUB_CONFIG, HUB_HOST = "clinc/clinc_oos", "plus", "huggingface.co"
HUB_TIMEOUT = 5  # seconds without an answer before the hub counts as unreachable

SPLIT_DOMAINS = {
    "train": ("credit_cards", "kitchen_and_dining", "meta", "small_talk", "travel", "utility"),
    "val": ("auto_and_commute",),
    "test": ("banking", "home", "work"),
}

# The official domains.json of CLINC150: domain -> its 15 intents.
DOMAINS: dict[str, tuple[str, ...]] = {
    "banking": ("freeze_account", "routing", "pin_change", "bill_due", "pay_bill", "account_blocked",
                "interest_rate", "min_payment", "bill_balance", "transfer", "order_checks", "balance",
                "spending_history", "transactions", "report_fraud"),
    "credit_cards": ("replacement_card_duration", "expiration_date", "damaged_card", "improve_credit_score",
                     "report_lost_card", "card_declined", "credit_limit_change", "apr", "redeem_rewards",
                     "credit_limit", "rewards_balance", "application_status", "credit_score", "new_card",
                     "international_fees"),
    "kitchen_and_dining": ("food_last", "confirm_reservation", "how_busy", "ingredients_list", "calories",
                           "nutrition_info", "recipe", "restaurant_reviews", "restaurant_reservation",
                           "meal_suggestion", "restaurant_suggestion", "cancel_reservation",
                           "ingredient_substitution", "cook_time", "accept_reservations"),
    "home": ("what_song", "play_music", "todo_list_update", "reminder", "reminder_update", "calendar_update",
             "order_status", "update_playlist", "shopping_list", "calendar", "next_song", "order", "todo_list",
             "shopping_list_update", "smart_home"),
    "auto_and_commute": ("current_location", "oil_change_when", "oil_change_how", "uber", "traffic",
                         "tire_pressure", "schedule_maintenance", "gas", "mpg", "distance", "directions",
                         "last_maintenance", "gas_type", "tire_change", "jump_start"),
    "travel": ("plug_type", "travel_notification", "translate", "flight_status", "international_visa",
               "timezone", "exchange_rate", "travel_suggestion", "travel_alert", "vaccines", "lost_luggage",
               "book_flight", "book_hotel", "carry_on", "car_rental"),
    "utility": ("weather", "alarm", "date", "find_phone", "share_location", "timer", "make_call", "calculator",
                "definition", "measurement_conversion", "flip_coin", "spelling", "time", "roll_dice", "text"),
    "work": ("pto_request_status", "next_holiday", "insurance_change", "insurance", "meeting_schedule", "payday",
             "taxes", "income", "rollover_401k", "pto_balance", "pto_request", "w2", "schedule_meeting",
             "direct_deposit", "pto_used"),
    "small_talk": ("who_made_you", "meaning_of_life", "who_do_you_work_for", "do_you_have_pets",
                   "what_are_your_hobbies", "fun_fact", "what_is_your_name", "where_are_you_from", "goodbye",
                   "thank_you", "greeting", "tell_joke", "are_you_a_bot", "how_old_are_you", "what_can_i_ask_you"),
    "meta": ("change_speed", "user_name", "whisper_mode", "yes", "change_volume", "no", "change_language",
             "repeat", "change_accent", "cancel", "sync_device", "change_user_name", "change_ai_name",
             "reset_settings", "maybe"),
}


class IntentDataset(ClassDataset):
    """Utterances grouped by intent: a ``ClassDataset`` whose examples are utterance ids.

    Args:
        data: ``[intents, utterances_per_intent]`` int64; ``data[c, j]`` is the index in ``texts`` of
            the ``j``-th utterance of intent ``c``.
        intents: one name per intent, as in the data: ``"pin_change"``.
        domains: the domain of each intent: ``"banking"``.
        texts: the utterances that ``data`` points into (shared, never copied, by :meth:`by_domain`).
        source, real: as for every ``ClassDataset``.

    Episodes from ``EpisodeSampler`` carry utterance ids (``support_x: [N*K]`` int64);
    :meth:`texts_of` turns them into strings for an encoder.
    """

    def __init__(self, data: Tensor, intents: Sequence[str], domains: Sequence[str], texts: Sequence[str],
                 source: str, real: bool = True):
        super().__init__(data, intents, source, real=real)
        if len(domains) != len(intents):
            raise ValueError(f"{len(domains)} domains for {len(intents)} intents")
        self.domains = tuple(domains)
        self.texts = tuple(texts)

    @property
    def intents(self) -> list[str]:
        return self.base_class_names

    @property
    def label_names(self) -> list[str]:
        """The intents as words, for label-name prompts: ``"pin_change"`` -> ``"pin change"``."""
        return [intent.replace("_", " ") for intent in self.intents]

    def texts_of(self, ids: Tensor) -> list[str]:
        """The utterances with ids ``ids`` (any shape, read in row-major order)."""
        return [self.texts[i] for i in ids.flatten().tolist()]

    def embedded(self, vectors: Tensor) -> ClassDataset:
        """The same intents with a vector per utterance: ``data`` becomes ``vectors[self.data]``.

        ``vectors: [len(self.texts), D]``, row ``i`` the embedding of ``texts[i]`` (for instance
        ``SentenceEncoder().encode(dataset.texts)``); the result's ``data`` is
        ``[intents, utterances_per_intent, D]``, so episodes carry vectors instead of ids.
        """
        if len(vectors) != len(self.texts):
            raise ValueError(f"{len(vectors)} vectors for {len(self.texts)} utterances: encode dataset.texts")
        return ClassDataset(vectors[self.data], self.intents, f"{self.source}; embedded", real=self.real)

    def by_domain(self) -> dict[str, IntentDataset]:
        """One ``IntentDataset`` per domain of this split, holding all of that domain's intents."""
        subsets = {}
        for domain in dict.fromkeys(self.domains):
            rows = [c for c, d in enumerate(self.domains) if d == domain]
            subsets[domain] = IntentDataset(self.data[rows], [self.intents[c] for c in rows], [domain] * len(rows),
                                            self.texts, f"{self.source}; domain {domain}", self.real)
        return subsets

    def __repr__(self) -> str:
        n_domains = len(set(self.domains))
        return (f"IntentDataset({self.num_classes} intents in {n_domains} domain{'s' * (n_domains > 1)} x "
                f"{self.examples_per_class} utterances; {self.source})")


def load_clinc(split: str, *, source: str = "auto", download: bool = True) -> IntentDataset:
    """One meta-split of CLINC150 (or of its stand-in) as an :class:`IntentDataset`.

    Args:
        split: ``"train"``, ``"val"`` or ``"test"`` (see the module's split table).
        source: ``"auto"`` (real data if found or downloadable, else, with COURSE_DATA unset, the
            announced stand-in), ``"real"`` (real data or ``DataNotFoundError``) or ``"standin"``.
        download: allow the Hugging Face hub when no local copy is found.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}: choose one of {', '.join(SPLITS)}")
    if source not in SOURCES:
        raise ValueError(f"unknown source {source!r}: choose one of {', '.join(SOURCES)}")
    if source == "standin":
        return load_clinc_standin(split)
    try:
        utterances, domains, origin = _real_clinc(download)
    except DataNotFoundError as error:
        fall_back_to_standin(error, source=source, folder=FOLDER, files="data_full.json and domains.json",
                             standin="generated stand-in")
        return load_clinc_standin(split)
    description = f"CLINC150, real: {split} split ({', '.join(SPLIT_DOMAINS[split])}), from {origin}"
    return _split_dataset(utterances, domains, SPLIT_DOMAINS[split], description, real=True)


def _real_clinc(allow_download: bool) -> tuple[dict[str, list[str]], Mapping[str, Sequence[str]], str]:
    """In-scope utterances per intent, the domain table, and where they came from.

    Raises ``DataNotFoundError`` saying in one sentence where we looked and why nothing was found
    (``CourseDataError`` for a wrong COURSE_DATA, see ``sources.find_local``).
    """
    found = find_local(FOLDER, [(DATA_FILE,)])
    if found is not None:
        return _read_folder(found.folder)
    if not allow_download:
        raise DataNotFoundError(f"CLINC150 not found in {looked_in(FOLDER)} and downloads are off (download=False)",
                                "downloads are off")
    try:
        return _read_hub()
    except DataNotFoundError as error:
        raise DataNotFoundError(f"CLINC150 not found in {looked_in(FOLDER)} and the Hugging Face hub failed "
                                f"({error.reason})", error.reason) from error


def _read_folder(folder: Path) -> tuple[dict[str, list[str]], Mapping[str, Sequence[str]], str]:
    """``data_full.json`` (rows ``[utterance, intent]`` in lists ``train``, ``val``, ``test``) and
    ``domains.json`` (domain -> intents) of the official CLINC150 repository."""
    rows = json.loads((folder / "data_full.json").read_text(encoding="utf-8"))
    utterances = defaultdict(list)
    for part in ("train", "val", "test"):
        for text, intent in rows[part]:
            utterances[intent].append(text)
    domains_file = folder / "domains.json"
    domains = json.loads(domains_file.read_text(encoding="utf-8")) if domains_file.is_file() else DOMAINS
    return utterances, domains, describe_path(folder)


def _read_hub() -> tuple[dict[str, list[str]], Mapping[str, Sequence[str]], str]:
    """The same utterances from the hub dataset ``clinc/clinc_oos`` (``plus``); domains from ``DOMAINS``."""
    unreachable = _hub_unreachable_reason()
    if unreachable:
        raise DataNotFoundError(f"the Hugging Face hub is unreachable: {unreachable}", unreachable)
    try:
        import datasets
        hub = datasets.load_dataset(HUB_DATASET, HUB_CONFIG)
    except Exception as error:  # datasets fails in many ways (network, cache, missing package): all mean "not here"
        raise DataNotFoundError(f"datasets could not load {HUB_DATASET}: {error}",
                                f"datasets raised {type(error).__name__}") from error
    names = hub["train"].features["intent"].names
    utterances = defaultdict(list)
    for part in ("train", "validation", "test"):
        for text, label in zip(hub[part]["text"], hub[part]["intent"]):
            utterances[names[label]].append(text)
    return utterances, DOMAINS, f"the Hugging Face hub ({HUB_DATASET}, {HUB_CONFIG})"


@functools.lru_cache(maxsize=None)
def _hub_unreachable_reason() -> str | None:
    """Why the hub cannot be reached (``"no network: host name not resolved"``), or None if it answers.

    Asked once per process: without a network, ``datasets`` would retry for about a minute per call.
    """
    try:
        socket.create_connection((HUB_HOST, 443), timeout=HUB_TIMEOUT).close()
    except OSError as error:
        return failure_reason(error, HUB_TIMEOUT)
    return None


def _split_dataset(utterances: Mapping[str, Sequence[str]], domains: Mapping[str, Sequence[str]],
                   split_domains: Sequence[str], source: str, real: bool) -> IntentDataset:
    """The intents of ``split_domains`` (sorted by name within each domain) as an ``IntentDataset``.

    Every intent keeps its first ``m`` utterances, ``m`` the fewest any in-scope intent of the
    whole dataset has (150 for CLINC150), so every class and every split has the same size.
    """
    missing = [intent for domain in split_domains for intent in domains[domain] if intent not in utterances]
    if missing:
        raise ValueError(f"the data has no utterances for the intents {missing}")
    per_intent = min(len(texts) for intent, texts in utterances.items() if intent != OUT_OF_SCOPE)
    intents = [(intent, domain) for domain in split_domains for intent in sorted(domains[domain])]
    texts = [text for intent, _ in intents for text in utterances[intent][:per_intent]]
    data = torch.arange(len(texts)).view(len(intents), per_intent)
    return IntentDataset(data, [i for i, _ in intents], [d for _, d in intents], texts, source, real)


# --- the offline stand-in ------------------------------------------------------------------------

STANDIN_SPLIT_DOMAINS = {"train": ("car", "food", "home"), "val": ("work",), "test": ("money", "travel")}
STANDIN_UTTERANCES_PER_INTENT = 60

# Paraphrase patterns: ways of asking an assistant to do something, wrapped around a command.
STANDIN_PARAPHRASES = ("{}", "please {}", "can you {}?", "could you {}?", "would you {}?", "i need you to {}",
                       "i'd like you to {}", "hey, {}", "{} please", "{}, thanks", "go ahead and {}",
                       "can you please {}?")

STANDIN_SLOTS = {
    "account": ("checking account", "savings account", "joint account", "business account", "student account"),
    "amount": ("$20", "50 dollars", "$125", "two hundred dollars", "$1,000"),
    "person": ("my mom", "alex", "my landlord", "sam from accounting", "my brother"),
    "bill": ("electric", "water", "phone", "internet", "gas"),
    "card": ("debit card", "credit card", "visa card", "bank card", "travel card"),
    "period": ("week", "month", "weekend", "quarter", "year"),
    "city": ("paris", "tokyo", "chicago", "lima", "cape town", "berlin"),
    "day": ("monday", "friday", "tomorrow", "the 14th", "next weekend"),
    "bag": ("suitcase", "backpack", "duffel bag", "golf bag", "carry-on"),
    "currency": ("euros", "yen", "pesos", "pounds", "rupees"),
    "country": ("brazil", "india", "japan", "kenya", "canada"),
    "time": ("6 am", "7:30", "noon", "10 pm", "half past eight"),
    "item": ("milk", "eggs", "paper towels", "coffee beans", "dish soap"),
    "list_name": ("grocery", "to-do", "packing", "chores", "gift"),
    "room": ("kitchen", "bedroom", "living room", "garage", "office"),
    "genre": ("jazz", "classical", "hip hop", "country", "lo-fi"),
    "temperature": ("68", "70", "72", "65", "74"),
    "number": ("two", "four", "six", "three", "eight"),
    "restaurant": ("luigi's", "the noodle bar", "green garden", "taco town", "the corner bistro"),
    "dish": ("lasagna", "banana bread", "chicken curry", "pancakes", "vegetable soup"),
    "ingredient": ("butter", "eggs", "buttermilk", "brown sugar", "heavy cream"),
    "leave": ("vacation", "sick", "personal", "parental", "holiday"),
    "device": ("laptop", "monitor", "keyboard", "work phone", "headset"),
    "benefit": ("dental", "health", "vision", "retirement", "life insurance"),
    "place": ("the airport", "downtown", "the mall", "the stadium", "work"),
    "tire": ("front left", "front right", "rear left", "rear right", "spare"),
}

# domain -> intent -> commands (each with at least one {slot}); paraphrased with STANDIN_PARAPHRASES.
STANDIN_INTENTS: dict[str, dict[str, tuple[str, ...]]] = {
    "money": {
        "balance": ("check the balance of my {account}", "tell me how much money is in my {account}",
                    "show what is left in my {account}"),
        "transfer": ("send {amount} to {person}", "move {amount} into my {account}", "wire {amount} over to {person}"),
        "pay_bill": ("pay my {bill} bill", "pay {amount} toward the {bill} bill", "settle the {bill} bill today"),
        "bill_due": ("tell me when my {bill} bill is due", "check the due date of the {bill} bill",
                     "remind me of the deadline for the {bill} bill"),
        "report_fraud": ("report a charge of {amount} i never made", "flag a strange payment on my {card}",
                         "tell the bank someone took {amount} from my {account}"),
        "freeze_card": ("freeze my {card}", "block my {card} right away", "lock the {card} i just lost"),
        "transactions": ("list the purchases on my {card} this {period}", "show the last payments from my {account}",
                         "go over what i spent this {period}"),
        "interest_rate": ("tell me the interest rate on my {account}", "check what my {account} earns in interest",
                          "find out the interest on a {account}"),
    },
    "travel": {
        "book_flight": ("book a flight to {city}", "get me a plane ticket to {city} for {day}",
                        "find flights to {city} leaving {day}"),
        "flight_status": ("check if my flight to {city} is on time", "tell me whether the {city} flight is delayed",
                          "look up when my flight from {city} lands"),
        "book_hotel": ("reserve a hotel room in {city}", "find me a place to stay in {city} on {day}",
                       "book a hotel near the center of {city}"),
        "car_rental": ("rent a car in {city}", "book a rental car for {day}", "get me a car when i land in {city}"),
        "lost_luggage": ("report that my {bag} never arrived", "find the {bag} the airline lost",
                         "track down my missing {bag} from the {city} flight"),
        "exchange_rate": ("tell me how many {currency} i get for a dollar", "convert {amount} into {currency}",
                          "check the exchange rate for {currency}"),
        "visa": ("find out if i need a visa for {country}", "tell me how to apply for a visa to {country}",
                 "check the visa rules for {country}"),
        "travel_alert": ("check for travel warnings in {country}", "tell me if it is safe to visit {country}",
                         "look up travel advisories for {city}"),
    },
    "home": {
        "set_alarm": ("set an alarm for {time}", "wake me up at {time}", "make an alarm go off at {time} on {day}"),
        "cancel_alarm": ("cancel the {time} alarm", "turn off my alarm for {time}", "delete the alarm set for {day}"),
        "add_to_list": ("add {item} to my {list_name} list", "put {item} on the {list_name} list",
                        "remember that we need {item}"),
        "read_list": ("read my {list_name} list back to me", "tell me what is on my {list_name} list",
                      "go through the {list_name} list"),
        "lights_on": ("turn on the lights in the {room}", "switch the {room} lights on", "light up the {room}"),
        "lights_off": ("turn off the lights in the {room}", "switch the {room} lights off", "make the {room} dark"),
        "play_music": ("play some {genre}", "put on {genre} music in the {room}", "start a {genre} playlist"),
        "thermostat": ("set the {room} to {temperature} degrees", "make the heat {temperature} degrees",
                       "change the thermostat to {temperature}"),
    },
    "food": {
        "reserve_table": ("book a table for {number} at {restaurant}", "reserve seats at {restaurant} for {day}",
                          "get us a table for {number} people on {day}"),
        "cancel_table": ("cancel my table at {restaurant}", "call off the reservation for {day}",
                         "drop our booking at {restaurant}"),
        "recipe": ("show me a recipe for {dish}", "tell me how to make {dish}", "find a simple way to cook {dish}"),
        "calories": ("tell me how many calories are in {dish}", "count the calories in a plate of {dish}",
                     "check how fattening {dish} is"),
        "cook_time": ("tell me how long to bake {dish}", "check the cooking time for {dish}",
                      "find out when the {dish} will be done"),
        "substitute": ("find something to use instead of {ingredient}", "tell me what replaces {ingredient}",
                       "suggest a swap for {ingredient} in {dish}"),
        "order_food": ("order {dish} for delivery", "get {dish} delivered from {restaurant}",
                       "have {restaurant} bring us {dish}"),
        "opening_hours": ("check when {restaurant} opens", "tell me if {restaurant} is open on {day}",
                          "find out how late {restaurant} stays open"),
    },
    "work": {
        "request_leave": ("request {leave} leave for {day}", "ask my manager for {number} {leave} days",
                          "put in for {leave} time next {period}"),
        "leave_balance": ("tell me how many {leave} days i have left", "check my remaining {leave} time",
                          "count the {leave} days i can still take this {period}"),
        "schedule_meeting": ("set up a meeting with {person} on {day}", "book a call with {person} for {time}",
                             "find a time to meet {person} this {period}"),
        "cancel_meeting": ("cancel my meeting with {person}", "call off the {time} call",
                           "take the meeting on {day} off my calendar"),
        "payday": ("tell me when i get paid this {period}", "check the date of the next paycheck",
                   "find out if payday falls on {day}"),
        "expense_report": ("file an expense of {amount}", "submit the {amount} taxi receipt from {city}",
                           "get me reimbursed for {amount}"),
        "it_ticket": ("report that my {device} is broken", "open a ticket for my {device}",
                      "get someone from it to fix my {device}"),
        "benefits": ("explain my {benefit} benefits", "tell me what my {benefit} plan covers",
                     "check how to enroll in {benefit} coverage"),
    },
    "car": {
        "gas_station": ("find a gas station near {place}", "tell me where to fill up on the way to {place}",
                        "look for cheap gas near {place}"),
        "tire_pressure": ("check the pressure of the {tire} tire", "tell me if the {tire} tire is low",
                          "read the air pressure in the {tire} tire"),
        "oil_change": ("schedule an oil change for {day}", "book the car in for new oil on {day}",
                       "find a shop near {place} that changes oil"),
        "directions": ("give me directions to {place}", "show me the way to {place}",
                       "navigate to {place} avoiding tolls"),
        "traffic": ("check the traffic on the way to {place}", "tell me if the road to {place} is jammed",
                    "find out how bad traffic to {place} is at {time}"),
        "ride": ("call a ride to {place}", "get me a taxi to {place} at {time}", "book a car to take me to {place}"),
        "parking": ("find parking near {place}", "look for a garage close to {place}",
                    "tell me where to park at {place} on {day}"),
        "jump_start": ("help me jump start my car at {place}", "tell me how to jump a dead battery",
                       "send roadside help to {place} for a flat battery"),
    },
}


def load_clinc_standin(split: str, *, seed: int = 0) -> IntentDataset:
    """The stand-in's ``split``: generated utterances, 6 domains x 8 intents x 60 utterances.

    Every utterance is a paraphrase pattern wrapped around one of its intent's three commands with
    its slots filled (``"can you send $20 to my mom?"``). Splits, by domain like CLINC150's, so
    meta-test intents are never seen in meta-training:

    =====  ===============  =======
    split  domains          intents
    =====  ===============  =======
    train  car, food, home  24
    val    work             8
    test   money, travel    16
    =====  ===============  =======

    The test domains hold near-duplicates like the real ones (``pay_bill`` and ``bill_due``,
    ``book_flight`` and ``flight_status``). Deterministic given ``seed``.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}: choose one of {', '.join(SPLITS)}")
    utterances = {intent: generate_utterances(intent, seed)
                  for intents in STANDIN_INTENTS.values() for intent in intents}
    source = (f"CLINC150 offline stand-in (generated utterances, seed {seed}), {split} split"
              " — not real CLINC150")
    return _split_dataset(utterances, STANDIN_INTENTS, STANDIN_SPLIT_DOMAINS[split], source, real=False)


@functools.lru_cache(maxsize=None)
def generate_utterances(intent: str, seed: int = 0) -> tuple[str, ...]:
    """``STANDIN_UTTERANCES_PER_INTENT`` distinct utterances of a stand-in intent, fixed by ``seed``.

    All combinations of command x slot fillers x paraphrase pattern are formed, then a random
    subset is drawn with the torch seed ``1000 * seed + i`` for the ``i``-th stand-in intent.
    """
    commands = next(intents[intent] for intents in STANDIN_INTENTS.values() if intent in intents)
    candidates = sorted({pattern.format(filled) for command in commands for filled in _fill_slots(command)
                         for pattern in STANDIN_PARAPHRASES})
    if len(candidates) < STANDIN_UTTERANCES_PER_INTENT:
        raise ValueError(f"the stand-in intent {intent!r} has only {len(candidates)} distinct utterances")
    intent_index = [i for intents in STANDIN_INTENTS.values() for i in intents].index(intent)
    generator = torch.Generator().manual_seed(1000 * seed + intent_index)
    picked = torch.randperm(len(candidates), generator=generator)[:STANDIN_UTTERANCES_PER_INTENT]
    return tuple(candidates[i] for i in picked.tolist())


def _fill_slots(command: str) -> list[str]:
    """Every filling of the ``{slot}`` fields of ``command`` with ``STANDIN_SLOTS`` values."""
    slots = list(dict.fromkeys(field for _, field, _, _ in string.Formatter().parse(command) if field))
    return [command.format(**dict(zip(slots, values)))
            for values in itertools.product(*(STANDIN_SLOTS[slot] for slot in slots))]
