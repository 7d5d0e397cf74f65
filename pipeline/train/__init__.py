"""Fine-tuning a collection's own open_clip model on its captioned images (docs/ARCHITECTURE.md §8).

``pairs`` finds the training pairs and splits them, ``loop`` trains with open_clip's losses,
``evaluation`` measures retrieval before and after, ``wise`` interpolates weights (WiSE-FT),
``export`` writes the open_clip ``local-dir:`` folder, and ``finetune`` runs the whole job.
"""
