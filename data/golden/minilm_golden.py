#!/usr/bin/env python3
"""Golden values for the all-MiniLM-L6-v2 sentence encoder (src/embed/sentence/).

Runs the reference implementation (sentence-transformers on PyTorch, CPU) on the model folder
that `lesion-indexer weights import minilm` writes and prints JSON: per phrase its token ids,
its embedding (mean pooling over real tokens, then L2 normalisation), the norm of the pooled
vector before normalisation, and the pairwise cosines; token ids alone for harder text.

    python3 -m venv /tmp/minilm-venv
    /tmp/minilm-venv/bin/pip install torch transformers sentence-transformers
    /tmp/minilm-venv/bin/python data/golden/minilm_golden.py \
        ~/.cache/lesion-search/all-minilm-l6-v2 > data/golden/minilm.json

tests/sentence_encoder.rs checks the ids exactly and the embeddings within 1e-4.
"""

import hashlib
import json
import sys

import sentence_transformers
import torch
import transformers
from sentence_transformers import SentenceTransformer

# A report of about 300 words, longer than the 256 tokens the model reads.
LONG_REPORT = " ".join(
    [
        "Comparison is made with the prior examination.",
        "There is a spiculated nodule in the right upper lobe measuring 2.3 x 1.9 cm,",
        "previously 1.8 x 1.5 cm, with pleural retraction.",
        "Enlarged right paratracheal and subcarinal lymph nodes, the largest 1.6 cm in short axis.",
        "No pleural effusion. The heart is normal in size.",
        "In the liver there are several hypodense lesions, the largest in segment VII measuring",
        "3.1 cm, new since the prior study and suspicious for metastases.",
        "The adrenal glands, pancreas and spleen are unremarkable.",
        "A simple cyst in the upper pole of the left kidney is unchanged.",
        "Lytic lesion of the left sixth rib with a soft-tissue component.",
    ]
    * 3
)

PHRASES = [
    "nodule",
    "mass",
    "kidney",
    "spiculated right upper lobe nodule",
    "enlarged mediastinal lymph node",
    "a lesion in the liver that got bigger",
    LONG_REPORT,
    "Hépatique",
]

# Token ids only: punctuation, symbols, unknown scripts, whitespace and control characters.
TOKENS_ONLY = [
    "Lesion of the RUL, 5.2x3.1 cm (prev. 4.0cm); SUV-max 7.5.",
    "patient\u2019s 3\u20135 mm nodules \u00b1 calcification at 45\u00b0",
    "  multiple\tspaces\nand\r\nline breaks\u00a0nbsp\u200bzero-width  ",
    "L\u00c9SION H\u00c9PATIQUE na\u00efve caf\u00e9 \u00c5ngstr\u00f6m",
    "\u809d\u810f\u80bf\u7269 tumour \U0001f600 \u0416\u0435\u043b\u0443\u0434\u043e\u043a",
    "non-enhancing, well-circumscribed hypoattenuating lesion #3 @ 10% ~ $5 <1cm>",
    "supercalifragilisticexpialidocious pneumonoultramicroscopicsilicovolcanoconiosis",
    "",
]


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: minilm_golden.py MODEL_DIR")
    model_dir = sys.argv[1]
    torch.manual_seed(0)
    torch.set_num_threads(2)
    model = SentenceTransformer(model_dir, device="cpu")
    model.eval()
    tokenizer = model.tokenizer

    def ids(text):
        features = model.tokenize([text])
        return features["input_ids"][0].tolist()

    with torch.no_grad():
        # The whole pipeline (Transformer, Pooling and, in this model, Normalize).
        embeddings = model.encode(
            PHRASES, batch_size=32, convert_to_tensor=True, normalize_embeddings=True
        )
        # Transformer and Pooling alone: the mean-pooled vectors before normalisation.
        pooled = model[1](model[0](model.tokenize(PHRASES)))["sentence_embedding"]
    names = [type(m).__name__ for m in model]
    assert names[:2] == ["Transformer", "Pooling"], names
    assert model[1].get_config_dict()["pooling_mode"] == "mean", "mean pooling expected"
    renormalised = torch.nn.functional.normalize(pooled, dim=1)
    assert torch.allclose(renormalised, embeddings, atol=1e-6), "pooling then L2 expected"
    cosines = (embeddings @ embeddings.T).tolist()

    with open(f"{model_dir}/model.safetensors", "rb") as f:
        weights_sha256 = hashlib.sha256(f.read()).hexdigest()

    out = {
        "model": "all-MiniLM-L6-v2",
        "weights_sha256": weights_sha256,
        "reference": {
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "sentence_transformers": sentence_transformers.__version__,
            "max_seq_length": model.max_seq_length,
            "tokenizer": type(tokenizer).__name__,
        },
        "dim": embeddings.shape[1],
        "phrases": [
            {
                "text": text,
                "token_ids": ids(text),
                "pooled_norm": round(float(pooled[i].norm()), 6),
                "embedding": [round(float(x), 7) for x in embeddings[i]],
            }
            for i, text in enumerate(PHRASES)
        ],
        "cosines": [[round(c, 6) for c in row] for row in cosines],
        "tokens_only": [{"text": t, "token_ids": ids(t)} for t in TOKENS_ONLY],
    }
    json.dump(out, sys.stdout, ensure_ascii=False, indent=1)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
