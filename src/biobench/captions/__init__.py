"""Captions for the tree of life (BioCAP's data pipeline): Wikipedia visual descriptions, an LLM filter, VLM captions.

1. `wiki.scrape`: unique taxa (all 7 ranks) of a TreeOfLife-10M `catalog.csv` -> one JSON line per taxon
   with the page's plain-text sections from the MediaWiki API (`mediawiki`), its revision id, and the
   redirect, disambiguation, missing or ambiguous status.
2. `wiki.filter`: an LLM keeps only the sentences that describe visual appearance (prompt in
   `prompts/filter.txt`, JSON answers validated, parse failures counted).
3. `generate`: a VLM writes one caption per image of TreeOfLife-10M webdataset shards, given the
   taxon's filtered description and its class's format examples (prompt in `prompts/caption.txt`);
   the output is a uuid -> caption table in the TreeOfLife-10M-Captions layout.

Every model call goes through `biobench.mllm.client.Client` (limits, retries, costs, answer cache).
Evaluation code never imports this package; `commands` is light to import (for `biobench --help`).
"""
