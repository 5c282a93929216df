"""The HDR anomaly challenge: butterfly hybrid detection, as hosted on CodaBench.

Imageomics, "HDR Anomaly ML Challenge: Butterfly Hybrid Detection" (2024-2025),
https://github.com/Imageomics/HDR-anomaly-challenge ; images from the Heliconius
collections of Cuthill et al. and others on Zenodo.

One module per concern:

- `scoring`: the challenge metric (pure functions) and the scoring program
  (`biobench challenge score`; also the bundle's `scoring_program/score.py`),
- `ingestion`: runs a submission's `model.py` over a folder of images
  (`biobench challenge ingest`; also the bundle's `ingestion_program/ingestion.py`),
- `classifier`: the probes that turn features into P(hybrid) (shared by the baselines and
  the `hybrids` task),
- `baseline`: features through the harness + a probe -> a ready-to-zip submission folder,
- `submission_model`: the `model.py` written into that folder,
- `bundle`: a CodaBench competition bundle built from the modules above,
- `commands`: the `biobench challenge ...` subcommands (light to import).

`scoring` and `ingestion` import only the standard library, numpy and Pillow, so they
run unchanged inside the CodaBench docker image without biobench installed.
"""
