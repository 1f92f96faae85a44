"""nlg: fine-tune GPT-2 (LoRA and the other methods of nlg.methods) on data-to-text sets, decode
with beam search and score as the official scripts do.

Stages (one module or package each, linked by files; `nlg STAGE` runs each alone):
    data -> train (nlg.training) -> select -> beam -> decode -> score -> results
    and beside them: recipe (nlg.datasets), compare, analyze (nlg.methods.lora), plot;
    nlg.pipeline chains them (`nlg reproduce`; scripts/reproduce.sh fronts it).
Shared: model (GPT-2), weights (published checkpoints), methods, datasets, metrics, tokenizer,
pairs, files, cli.
"""

__version__ = "0.1.0"
