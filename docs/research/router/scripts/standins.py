"""Hand-written STAND-IN prompts (not real traffic, written for this note) for the OOD check."""
STANDINS = {
    "chat": [
        "hey! can you help me plan a 3-day trip to Lisbon in October? I like food and walking, not museums",
        "My manager keeps scheduling meetings over my lunch break. How do I bring it up without sounding rude?",
        "Write a short birthday poem for my grandmother who loves gardening and crossword puzzles.",
        "What's the difference between a latte and a flat white?",
        "Summarise the plot of Pride and Prejudice in three sentences.",
    ],
    "code": [
        "Why does this Python raise KeyError?\n\nd = {}\nfor w in words:\n    d[w] += 1",
        "Write a SQL query that returns the top 5 customers by total order value in 2023 from orders(customer_id, amount, created_at).",
        "Refactor this JavaScript to use async/await:\nfetch(url).then(r => r.json()).then(data => console.log(data)).catch(e => console.error(e));",
        "In Rust, how do I share a HashMap between threads safely? Show a minimal example with Arc and Mutex.",
        "```bash\nfind . -name '*.log' -mtime +7 -exec rm {} \\;\n```\nExplain what this does and how to make it a dry run.",
    ],
    "multilingual": [
        "¿Cuál es la diferencia entre 'ser' y 'estar'? Dame ejemplos sencillos.",
        "Bitte schreibe eine höfliche E-Mail an meinen Vermieter, dass die Heizung seit drei Tagen nicht funktioniert.",
        "请用简单的语言解释什么是区块链。",
        "Explique-moi la photosynthèse comme si j'avais dix ans.",
        "日本の四季について短い文章を書いてください。",
    ],
    "mmlu-like (control)": [
        "Which of the following is the primary function of the mitochondria?\nA. Protein synthesis\nB. Energy production\nC. Lipid storage\nD. Cell division\nAnswer:",
        "The Treaty of Westphalia (1648) is most closely associated with which of the following?\nA. The end of the Thirty Years' War\nB. The unification of Italy\nC. The start of the Hundred Years' War\nD. The Congress of Vienna\nAnswer:",
    ],
    "gsm8k-like (control)": [
        "Maria buys 3 boxes of pencils with 12 pencils in each box. She gives 7 pencils to her brother. How many pencils does she have left?",
        "A train travels 60 miles per hour for 2.5 hours and then 40 miles per hour for 1 hour. How far does it travel in total?",
    ],
}
