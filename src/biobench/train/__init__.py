"""BioCAP-style CLIP training on open_clip: taxonomic names plus captions, two visual projectors.

Not imported by evaluation code: `biobench train ...` imports it on demand. Modules:

- `data`: TreeOfLife-10M-format webdataset shards joined by uuid with a TreeOfLife-10M-Captions table;
  deterministic, resumable streaming; per-sample name form; counted skips.
- `model`: an open_clip CLIP with a second visual projection (taxonomic / caption), the combined
  contrastive loss, and export to an open_clip `local-dir:` checkpoint per projector.
- `loop`: the training loop (bf16 autocast on CUDA, accumulation, cosine warm-up, exact resume,
  atomic checkpoints, JSON-lines metrics, DDP through torchrun).
- `fixture`: generated shards and captions table in the real format.
"""
