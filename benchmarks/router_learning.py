"""The router learns a deployment's traffic: simulated tiers, 500 judged shadow pairs, held-out APGR.

A simulated deployment: requests of ten everyday kinds (emails, summaries, trip plans, explanations, word
problems, recipes, advice, ...) in English, 20% of them with a piece of code (Python, JavaScript, SQL, shell,
Rust, Go), and a quarter of the traffic the same kinds of request **in German**: the hidden kind. The tiers are
simulated (``tests/fakes/judge.py``): the open (weak) tier fails 90% of the German prompts and 10% of the others
(code included), the closed (strong) tier 5% of any; the fake Claude also judges. Nothing in the shipped
router's training data (MMLU, GSM8K) says that this weak model cannot handle German, and German written in the
Latin script passes its script rule; the code prompts, which a length or code cue would send to the strong
tier, gain nothing from it here.

1. The gateway (the real app, on loopback, the learned router with the shipped artifact, ``router.shadow.share:
   1``) serves the first 500 prompts through the OpenAI SDK; every one becomes a shadow pair, judged in both
   orders.
2. ``tiergate router train --from-ledger`` retrains on those 500 judged pairs (the latest 20% held out to
   calibrate, the shipped router as the prior) into the folder ``router.artifact`` names; the gateway reloads it.
3. 1,000 further prompts of the same deployment, never seen, are scored by the shipped router and the retrained
   one (as served: the out-of-distribution fallback included), beside random, prompt length, the rules router,
   and logistic regression and kNN on the sentence vector trained on the same 500 judged pairs; APGR against the
   simulation's true outcomes. Then the 1,000 prompts go through the gateway (shadowing off) for the realised
   closed share and quality at the calibrated threshold.

    python benchmarks/router_learning.py [--out docs/benchmarks-routing.md] [--pairs 500] [--held-out 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))

from routing_quality import machine_line, write_section  # noqa: E402
from tests.fakes import FakeAnthropic, FakeOpenAI  # noqa: E402
from tests.fakes.judge import SimulatedTiers  # noqa: E402
from tests.support.servers import serve_app  # noqa: E402

from tiergate.routing.features import FEATURE_NAMES, request_features  # noqa: E402
from tiergate.routing.learned import LearnedModel, LearnedRouter  # noqa: E402
from tiergate.routing.simple import rules_score  # noqa: E402
from tiergate.train.router.metrics import evaluate  # noqa: E402
from tiergate.types import ChatRequest, Message  # noqa: E402

SEED = 7

# ------------------------------------------------------------------------------------------- the traffic

NAMES = ["Ana", "Bilal", "Chloe", "Dmitri", "Eun-ji", "Farid", "Greta", "Hugo", "Ines", "Jonas", "Kofi", "Lena"]
CITIES = ["Lisbon", "Kyoto", "Oaxaca", "Tallinn", "Cape Town", "Montreal", "Hanoi", "Edinburgh", "Porto", "Seville"]
TOPICS = [
    "photosynthesis",
    "compound interest",
    "the French Revolution",
    "black holes",
    "vaccines",
    "inflation",
    "plate tectonics",
    "the immune system",
    "supply and demand",
    "climate feedback loops",
    "sleep cycles",
    "the printing press",
    "game theory",
    "ocean tides",
    "antibiotic resistance",
    "the stock market",
]
THINGS = ["landlord", "manager", "neighbour", "sister", "coach", "colleague", "teacher", "flatmate", "client"]
FOODS = ["chickpeas", "spinach", "rice", "eggs", "tofu", "lentils", "peppers", "feta", "mushrooms", "salmon"]
WORDS = ["order", "user", "item", "price", "total", "count", "name", "score", "record", "event", "value", "row"]
SENTENCES = [
    "The meeting ran long and nobody agreed on the budget.",
    "We moved the launch to the second week of March.",
    "The report says customer complaints doubled after the change.",
    "Our team wants to try a four-day week in the summer.",
    "The museum will close its east wing for repairs until June.",
    "Most of the feedback was positive, but the price worried people.",
    "The council voted to extend the cycle lanes along the river.",
    "Two suppliers missed their deadlines in the last quarter.",
    "The survey had a response rate of only twelve percent.",
    "She thinks the new schedule will leave no time for training.",
]


def _paragraph(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(SENTENCES) for _ in range(n))


def _identifier(rng: random.Random) -> str:
    return f"{rng.choice(WORDS)}_{rng.choice(WORDS)}"


def _snippet(rng: random.Random) -> tuple[str, str]:
    a, b, c = _identifier(rng), _identifier(rng), rng.choice(WORDS)
    n = rng.randint(2, 9)
    lang = rng.choice(["python", "javascript", "sql", "bash", "rust", "go"])
    code = {
        "python": f"def {a}(rows):\n    {b} = {{}}\n    for r in rows:\n        {b}[r.{c}] += {n}\n    return {b}",
        "javascript": f"fetch('/api/{c}s').then(r => r.json()).then(d => {{\n"
        f"  const {a} = d.filter(x => x.{c} > {n});\n  console.log({a}.length);\n}});",
        "sql": f"SELECT {c}, SUM({b}) AS total\nFROM {a}\nWHERE {b} > {n}\nGROUP BY {c}\nORDER BY total DESC;",
        "bash": f"for f in $(ls *.{c}); do\n  grep -c '{a}' \"$f\" | awk '{{s+=$1}} END {{print s}}'\ndone",
        "rust": f"fn {a}(v: &Vec<i32>) -> i32 {{\n    let mut {b} = 0;\n"
        f"    for x in v {{ {b} += x * {n}; }}\n    {b}\n}}",
        "go": f"func {a}(xs []int) int {{\n\t{b} := 0\n\tfor _, x := range xs {{\n"
        f"\t\t{b} += x * {n}\n\t}}\n\treturn {b}\n}}",
    }[lang]
    return lang, code


def code_prompt(rng: random.Random) -> str:
    lang, code = _snippet(rng)
    fence = rng.random() < 0.6
    body = f"```{lang}\n{code}\n```" if fence else code
    ask = rng.choice(
        [
            f"Why does this {lang} code give the wrong result?\n{body}",
            f"Can you make this more readable and explain what it does?\n{body}",
            f"What will this print for a small example input? {body}",
            f"My {rng.choice(THINGS)} wrote this and it is slow. How would you speed it up?\n{body}",
            f"Add error handling to the following, please:\n{body}\nKeep the same behaviour otherwise.",
            f"Is there a bug here? {body}",
        ]
    )
    return ask


def plain_prompt(rng: random.Random) -> str:
    name, city, topic = rng.choice(NAMES), rng.choice(CITIES), rng.choice(TOPICS)
    thing = rng.choice(THINGS)
    return rng.choice(
        [
            f'Here is an email from my {thing}:\n"{_paragraph(rng, 3)}"\nHow should I reply politely?',
            f"Summarise this in two sentences:\n{_paragraph(rng, 4)}",
            f"Plan a {rng.randint(2, 6)}-day trip to {city} for someone who likes food and walking. "
            f"{_paragraph(rng, 1)}",
            f"Explain {topic} to a curious twelve-year-old, with one everyday example.",
            f"{name} buys {rng.randint(3, 12)} notebooks at ${rng.randint(2, 9)} each and pays with a "
            f"${rng.choice([50, 100])} note. How much change does {name} get?",
            f"I have {', '.join(rng.sample(FOODS, 4))}. What could I cook tonight in {rng.randint(20, 45)} minutes?",
            f"My {thing} keeps interrupting me in meetings. {_paragraph(rng, 2)} What should I do?",
            f"Write a short, warm birthday message for {name}, who just moved to {city}.",
            f"What are the main arguments for and against {topic} being taught earlier in school?",
            f"Rewrite this note in plain language: {_paragraph(rng, 2)}",
        ]
    )


DE_TOPICS = [
    "die Photosynthese",
    "den Zinseszins",
    "die Französische Revolution",
    "schwarze Löcher",
    "Impfungen",
    "die Inflation",
    "die Plattentektonik",
    "das Immunsystem",
    "Angebot und Nachfrage",
    "die Gezeiten",
    "den Buchdruck",
    "die Spieltheorie",
    "Antibiotikaresistenz",
    "den Aktienmarkt",
    "den Schlafzyklus",
]
DE_THINGS = ["Vermieter", "Chef", "Nachbar", "Trainer", "Kollege", "Lehrer", "Mitbewohner", "Kunde"]
DE_FOODS = ["Kichererbsen", "Spinat", "Reis", "Eier", "Tofu", "Linsen", "Paprika", "Feta", "Pilze", "Lachs"]
DE_SENTENCES = [
    "Die Besprechung dauerte lange und niemand war mit dem Budget einverstanden.",
    "Wir haben den Start auf die zweite Märzwoche verschoben.",
    "Laut Bericht haben sich die Beschwerden nach der Änderung verdoppelt.",
    "Unser Team möchte im Sommer eine Viertagewoche ausprobieren.",
    "Das Museum schließt den Ostflügel bis Juni wegen Reparaturen.",
    "Die meisten Rückmeldungen waren positiv, aber der Preis hat die Leute beunruhigt.",
    "Der Stadtrat hat beschlossen, die Radwege entlang des Flusses zu verlängern.",
    "Zwei Lieferanten haben im letzten Quartal ihre Fristen verpasst.",
    "Die Umfrage hatte eine Rücklaufquote von nur zwölf Prozent.",
    "Sie glaubt, dass der neue Plan keine Zeit mehr für Schulungen lässt.",
]


def german_prompt(rng: random.Random) -> str:
    """The same kinds of request, in German: the hidden kind of this deployment."""
    name, city, topic = rng.choice(NAMES), rng.choice(CITIES), rng.choice(DE_TOPICS)
    thing = rng.choice(DE_THINGS)

    def paragraph(n: int) -> str:
        return " ".join(rng.choice(DE_SENTENCES) for _ in range(n))

    return rng.choice(
        [
            f'Hier ist eine E-Mail von meinem {thing}:\n"{paragraph(3)}"\nWie antworte ich höflich?',
            f"Fasse das in zwei Sätzen zusammen:\n{paragraph(4)}",
            f"Plane eine {rng.randint(2, 6)}-tägige Reise nach {city} für jemanden, der gern isst und spazieren "
            f"geht. {paragraph(1)}",
            f"Erkläre {topic} einem neugierigen zwölfjährigen Kind, mit einem Beispiel aus dem Alltag.",
            f"{name} kauft {rng.randint(3, 12)} Hefte zu je {rng.randint(2, 9)} Euro und bezahlt mit einem "
            f"{rng.choice([50, 100])}-Euro-Schein. Wie viel Wechselgeld bekommt {name}?",
            f"Ich habe {', '.join(rng.sample(DE_FOODS, 4))}. Was kann ich heute Abend in {rng.randint(20, 45)} "
            "Minuten kochen?",
            f"Mein {thing} unterbricht mich ständig in Besprechungen. {paragraph(2)} Was soll ich tun?",
            f"Schreibe eine kurze, herzliche Geburtstagsnachricht für {name}, der gerade nach {city} gezogen ist.",
            f"Was spricht dafür und dagegen, {topic} früher in der Schule zu behandeln?",
            f"Formuliere diese Notiz in einfacher Sprache um: {paragraph(2)}",
        ]
    )


def traffic(n: int, rng: random.Random, hidden_share: float = 0.25, code_share: float = 0.2) -> list[tuple[str, bool]]:
    """(prompt, of the hidden kind): German prompts are the hidden kind; English ones include code."""
    out = []
    for _ in range(n):
        u = rng.random()
        if u < hidden_share:
            out.append((german_prompt(rng), True))
        elif u < hidden_share + code_share:
            out.append((code_prompt(rng), False))
        else:
            out.append((plain_prompt(rng), False))
    return out


# ------------------------------------------------------------------------------------------- the run


def _wait(check: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.2)


def _samples(url: str) -> list[Any]:
    from tiergate.accounting.database import connect
    from tiergate.learning.store import Store

    async def read() -> list[Any]:
        engine = connect(url)
        try:
            return await Store(engine).samples()
        finally:
            await engine.dispose()

    return asyncio.run(read())


def served_scores(model: LearnedModel, vectors: np.ndarray, requests: list[ChatRequest]) -> np.ndarray:
    """Scores as the gateway uses them: the learned score's percentile on the calibration set, or, where the
    prompt falls back (out of distribution), the rules score's percentile; the served decision is pct > 1 - share
    either way."""
    from tiergate.routing.base import Signals

    router = LearnedRouter(model)
    out = np.empty(len(requests))
    quantiles = model.arrays["calibration_quantiles"].astype(np.float64)
    for i, (v, req) in enumerate(zip(vectors, requests, strict=True)):
        decision = router.decide(req, Signals(embedding=v))
        if decision.fallback:
            pct = model.rules_percentile(rules_score(req))
            out[i] = pct if pct is not None else 0.5
        else:
            out[i] = np.searchsorted(quantiles, decision.score, side="right") / quantiles.size
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=500)
    parser.add_argument("--held-out", type=int, default=1000)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks-routing.md")
    args = parser.parse_args()
    import openai
    from typer.testing import CliRunner

    from tiergate.api import create_app
    from tiergate.cli.router import router_app
    from tiergate.config import parse_config
    from tiergate.signals.encoder import Encoder

    rng = random.Random(SEED)
    live = traffic(args.pairs, rng)
    held = traffic(args.held_out, rng)
    kinds = {text: is_code for text, is_code in live + held}
    tiers = SimulatedTiers(hidden=lambda text: kinds.get(text, False))
    work = Path(tempfile.mkdtemp(prefix="tiergate-learning-"))
    folder = work / "router"
    LearnedModel.default().save(folder)
    os.environ.setdefault("TIERGATE_BENCH_CLAUDE_KEY", "sk-ant-test")
    fake_open, fake_claude = FakeOpenAI(models=["sim-open"], record=False), FakeAnthropic(api_key="sk-ant-test")
    fake_claude.record = False
    fake_open.responder, fake_claude.responder = tiers.responder("open"), tiers.responder("closed")
    db = f"sqlite:///{work / 'ledger.db'}"
    timings: dict[str, float] = {}
    with serve_app(fake_open) as open_url, serve_app(fake_claude) as claude_url:
        backends = [
            {"name": "gpu", "tier": "open", "kind": "openai", "base_url": open_url + "/v1", "model": "sim-open"},
            {
                "name": "claude",
                "tier": "closed",
                "kind": "anthropic",
                "base_url": claude_url,
                "model": "claude-sonnet-4-5",
                "api_key_env": "TIERGATE_BENCH_CLAUDE_KEY",
            },
        ]
        router = {"kind": "learned", "artifact": str(folder), "reload_interval_s": 0.2}
        config = parse_config(
            {
                "backends": backends,
                "router": {**router, "shadow": {"share": 1.0, "max_in_flight": 1000}},
                "ledger": {"url": db},
            }
        )
        with serve_app(create_app(config)) as url:
            api = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)

            def ask(text: str) -> dict[str, str]:
                raw = api.chat.completions.with_raw_response.create(
                    model="auto", messages=[{"role": "user", "content": text}], max_tokens=16
                )
                return dict(raw.headers)

            t0 = time.perf_counter()
            with ThreadPoolExecutor(4) as pool:
                answered = list(pool.map(ask, [t for t, _ in live]))
            decided = sum(h["x-tiergate-route"].startswith(("router:", "ood:")) for h in answered)
            import httpx

            try:
                _wait(lambda: len(_samples(db)) >= decided, 600, "the shadow pairs")
            except TimeoutError:
                print(httpx.get(url + "/admin/router").json(), flush=True)
                raise
            timings["serve and judge the live traffic"] = time.perf_counter() - t0
            statuses: dict[str, int] = {}
            for s in _samples(db):
                statuses[s.status] = statuses.get(s.status, 0) + 1
            t0 = time.perf_counter()
            result = CliRunner().invoke(router_app, ["train", "--from-ledger", "--db", db, "--out", str(folder)])
            if result.exit_code != 0:
                raise SystemExit(result.output)
            timings["train --from-ledger"] = time.perf_counter() - t0
            print(result.output, flush=True)

            _wait(lambda: httpx.get(url + "/admin/router").json()["reloads"] == 1, 60, "the reload")
        # The held-out traffic, served by the retrained router (shadowing off: a new gateway on the same ledger).
        config = parse_config({"backends": backends, "router": router, "ledger": {"url": db}})
        realised: list[tuple[str, bool]] = []
        with serve_app(create_app(config)) as url:
            api = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
            for text, _ in held:
                raw = api.chat.completions.with_raw_response.create(
                    model="auto", messages=[{"role": "user", "content": text}], max_tokens=16
                )
                realised.append((raw.headers["x-tiergate-tier"], raw.headers["x-tiergate-route"].startswith("ood:")))

    retrained, shipped = LearnedModel.load(folder), LearnedModel.default()
    encoder = Encoder.load(intra_op_num_threads=1)
    requests = [ChatRequest(model="auto", messages=[Message.text("user", t)]) for t, _ in held]
    vectors = encoder.encode([t for t, _ in held])
    encoder.close()
    feats = np.stack([request_features(r) for r in requests])
    weak = np.array([float(tiers.good("open", t)) for t, _ in held])
    strong = np.array([float(tiers.good("closed", t)) for t, _ in held])

    # Baselines trained on the same 500 judged pairs (their vectors, from the ledger).
    from sklearn.linear_model import LogisticRegression

    from tiergate.train.router.ledger import load_ledger

    pairs = load_ledger(db)
    gain = pairs.outcomes.gain
    lr = LogisticRegression(C=1.0, max_iter=3000).fit(pairs.vectors, (gain > 0).astype(int))
    sims = vectors @ pairs.vectors.T
    idx = np.argpartition(-sims, 32, axis=1)[:, :32]
    w = np.take_along_axis(sims, idx, 1).clip(0)
    knn = (w * gain[idx]).sum(1) / (w.sum(1) + 1e-9)
    scores = {
        "random": np.zeros(len(held)),
        "prompt length": feats[:, FEATURE_NAMES.index("log_chars")].astype(np.float64),
        "rules router": np.array([rules_score(r) for r in requests]),
        "shipped router (head)": shipped.predict(vectors, feats),
        "shipped router (as served)": served_scores(shipped, vectors, requests),
        f"LR on the vector, {len(gain)} judged pairs": lr.decision_function(vectors),
        f"kNN on the vector, {len(gain)} judged pairs": knn,
        "retrained router (head)": retrained.predict(vectors, feats),
        "retrained router (as served)": served_scores(retrained, vectors, requests),
        "oracle": strong - weak,
    }
    metrics = {name: evaluate(s, weak, strong) for name, s in scores.items()}
    code = np.array([c for _, c in held])
    closed = np.array([tier == "closed" for tier, _ in realised])
    fallback = np.array([f for _, f in realised])
    quality = float(np.where(closed, strong, weak).mean())
    meta = retrained.meta
    lines = [
        "## The router learns a deployment's traffic (simulated tiers, judged shadow pairs)",
        "",
        f"{machine_line()}. Produced by `python benchmarks/router_learning.py` (its docstring describes the "
        "simulation). Traffic: templated requests of ten everyday kinds in English (20% of the traffic with a piece "
        "of code) and the same kinds in German (25%: the hidden kind); the open tier fails 90% of the German "
        "prompts and 10% of the others, the closed tier 5% of any (fixed per prompt). The shipped artifact served the "
        f"first {len(live)} prompts with `router.shadow.share: 1` ({decided} decided by the router and so "
        f"shadowed; pairs: {statuses}); `tiergate router train "
        f"--from-ledger` retrained it on them (penalty {meta['head']['alpha']:g} chosen by the worst inner fold, "
        f"{meta['data']['train_rows']} pairs to fit, the latest {meta['data']['holdout_rows']} to calibrate, the "
        "shipped router as the prior) and the gateway reloaded it without a restart. Below, "
        f"{len(held)} further prompts of the same traffic ({int(code.sum())} in German), never seen, against "
        "the simulation's true outcomes.",
        "",
        "| router | APGR | CPT(50%) | CPT(80%) | strong share for 95% |",
        "|---|---|---|---|---|",
    ]
    for name, m in metrics.items():
        lines.append(f"| {name} | {m.apgr:.3f} | {m.cpt50:.3f} | {m.cpt80:.3f} | {m.share_at_95:.3f} |")
    m0 = metrics["random"]
    lines += [
        "",
        f"Open only {m0.weak:.3f}, closed only {m0.strong:.3f}. 'As served' includes the out-of-distribution "
        "fallback (the rules router at the same share) where the prompt is far from the router's training "
        "vectors; 'head' is the learned score alone. The LR and kNN baselines were fitted on the same judged pairs "
        "(all of them: the retrained router fitted on 80% and calibrated on the rest).",
        "",
        f"Served by the gateway after the reload, at the calibrated threshold {meta['calibration']['threshold']:.3f}: "
        f"{closed.mean():.1%} of the held-out prompts went closed ({closed[code].mean():.1%} of those in German, "
        f"{closed[~code].mean():.1%} of the others), {fallback.mean():.1%} fell back as out of distribution; quality "
        f"{quality:.3f} against closed only {m0.strong:.3f} ({quality / m0.strong:.3f} x).",
        "",
        "Time: " + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items()) + ".",
        "",
    ]
    goal = metrics["retrained router (as served)"].apgr
    lines.append(
        f"Goal (retrained on {len(gain)} judged pairs, APGR >= 0.8 on held-out traffic where the shipped router is "
        f"at chance or below: {metrics['shipped router (as served)'].apgr:.3f}): "
        f"**{'met' if goal >= 0.8 else 'not met'}** ({goal:.3f})."
    )
    write_section(args.out, "router-learning", "\n".join(lines))
    print("\n".join(lines))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
