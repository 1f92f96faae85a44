"""nlg: fine-tune GPT-2 with LoRA, decode with beam search and score on E2E.

Stages (one module each, linked by files):
    tokenizer -> data -> model/lora -> train -> beam -> decode -> metrics
"""

__version__ = "0.1.0"
