"""BibTeX entries for the card's *Citation* section: kd_hf, the dataset, the teacher's base model and each loss."""

KD_HF_URL = "https://github.com/kd-hf/kd_hf"

KD_HF = f"""@software{{kd_hf,
  title = {{kd_hf: distilling Hugging Face models into students that predict and explain like their teachers}},
  author = {{{{kd_hf contributors}}}},
  url = {{{KD_HF_URL}}},
  year = {{2026}}
}}"""

# Keyed by the Hub id of the dataset (the card's `datasets`).
DATASETS = {
    "cornell-movie-review-data/rotten_tomatoes": """@inproceedings{pang2005seeing,
  title = {Seeing Stars: Exploiting Class Relationships for Sentiment Categorization with Respect to Rating Scales},
  author = {Pang, Bo and Lee, Lillian},
  booktitle = {Proceedings of the 43rd Annual Meeting of the Association for Computational Linguistics},
  pages = {115--124},
  year = {2005}
}""",
    "ylecun/mnist": """@article{lecun1998gradient,
  title = {Gradient-Based Learning Applied to Document Recognition},
  author = {LeCun, Yann and Bottou, L{\\'e}on and Bengio, Yoshua and Haffner, Patrick},
  journal = {Proceedings of the IEEE},
  volume = {86},
  number = {11},
  pages = {2278--2324},
  year = {1998}
}""",
}

_MINILM = """@inproceedings{wang2020minilm,
  title = {MiniLM: Deep Self-Attention Distillation for Task-Agnostic Compression of Pre-Trained Transformers},
  author = {Wang, Wenhui and Wei, Furu and Dong, Li and Bao, Hangbo and Yang, Nan and Zhou, Ming},
  booktitle = {Advances in Neural Information Processing Systems},
  volume = {33},
  pages = {5776--5788},
  year = {2020}
}"""

# Keyed by the Hub id of the teacher or of the model it was fine-tuned from.
MODELS = {
    "sentence-transformers/all-MiniLM-L6-v2": (
        _MINILM,
        """@inproceedings{reimers2019sentence,
  title = {Sentence-BERT: Sentence Embeddings using Siamese BERT-Networks},
  author = {Reimers, Nils and Gurevych, Iryna},
  booktitle = {Proceedings of the 2019 Conference on Empirical Methods in Natural Language Processing},
  pages = {3982--3992},
  year = {2019}
}""",
    ),
    "microsoft/MiniLM-L12-H384-uncased": (_MINILM,),
    "google-bert/bert-base-uncased": (
        """@inproceedings{devlin2019bert,
  title = {BERT: Pre-training of Deep Bidirectional Transformers for Language Understanding},
  author = {Devlin, Jacob and Chang, Ming-Wei and Lee, Kenton and Toutanova, Kristina},
  booktitle = {Proceedings of NAACL-HLT 2019},
  pages = {4171--4186},
  year = {2019}
}""",
    ),
}
MODELS["bert-base-uncased"] = MODELS["google-bert/bert-base-uncased"]

_HINTON = """@article{hinton2015distilling,
  title = {Distilling the Knowledge in a Neural Network},
  author = {Hinton, Geoffrey and Vinyals, Oriol and Dean, Jeff},
  journal = {arXiv preprint arXiv:1503.02531},
  year = {2015}
}"""
_TINYBERT = """@inproceedings{jiao2020tinybert,
  title = {TinyBERT: Distilling BERT for Natural Language Understanding},
  author = {Jiao, Xiaoqi and Yin, Yichun and Shang, Lifeng and Jiang, Xin and Chen, Xiao and Li, Linlin and Wang, Fang
    and Liu, Qun},
  booktitle = {Findings of the Association for Computational Linguistics: EMNLP 2020},
  pages = {4163--4174},
  year = {2020}
}"""

# Keyed by `loss_type`.
LOSSES = {
    "soft_label": (_HINTON,),
    "attention": (_TINYBERT, _MINILM),
    "hidden_state": (
        """@inproceedings{romero2015fitnets,
  title = {FitNets: Hints for Thin Deep Nets},
  author = {Romero, Adriana and Ballas, Nicolas and Kahou, Samira Ebrahimi and Chassang, Antoine and Gatta, Carlo
    and Bengio, Yoshua},
  booktitle = {International Conference on Learning Representations},
  year = {2015}
}""",
        _TINYBERT,
    ),
    "attribution": (
        """@inproceedings{parchami2024good,
  title = {Good Teachers Explain: Explanation-Enhanced Knowledge Distillation},
  author = {Parchami-Araghi, Amin and B{\\"o}hle, Moritz and Rao, Sukrut and Schiele, Bernt},
  booktitle = {European Conference on Computer Vision (ECCV)},
  year = {2024}
}""",
        """@inproceedings{sundararajan2017axiomatic,
  title = {Axiomatic Attribution for Deep Networks},
  author = {Sundararajan, Mukund and Taly, Ankur and Yan, Qiqi},
  booktitle = {International Conference on Machine Learning},
  pages = {3319--3328},
  year = {2017}
}""",
    ),
}


def citations(losses: list[str], dataset: str | None, models: list[str]) -> list[str]:
    """The BibTeX entries a card cites, once each: kd_hf, the dataset (by Hub id), the teacher's models (their Hub ids
    and the bases they were fine-tuned from) and the paper of each loss in use."""
    entries = [KD_HF, DATASETS.get(dataset or "")]
    entries += [entry for model in models for entry in MODELS.get(model or "", ())]
    entries += [entry for loss in losses for entry in LOSSES.get(loss, ())]
    return list(dict.fromkeys(entry for entry in entries if entry))
